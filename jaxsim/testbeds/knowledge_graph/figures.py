"""Knowledge-graph figures, drawn from saved files only.

- figures/knowledge_accuracy.png: accuracy of the answer on each evaluation split (direct,
  logical, compositional: the fixed evaluation batches of metrics.npz) over training, one line
  per run (colour, line style, marker: one swept axis each; the key beside the panels).
After `jaxsim analyze`:
- figures/knowledge_exact.png: exact accuracy over every fact of each kind at every saved
  checkpoint, and the ring neighbour score (`geometry.ring_neighbours`, mean over cycles) of
  the last subject site and the last query site, with its chance level.
- figures/knowledge_pca.png, figures/knowledge_isomap.png: one run's entity representations
  at its final checkpoint (the run with the best final logical + direct accuracy), one row per
  site, one column per cycle: a subject site's one 2-D projection (PCA, or Isomap on an
  8-nearest-neighbour graph) coloured by each entity's position on that cycle (a cyclic colour
  map), consecutive positions joined; a query site's row projects each cycle's own query
  representations. A cycle the model holds as a ring shows as a closed loop in order.

A diverged run (runs.csv status) is not drawn and each figure's title names it.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxsim.plotting import diverged, diverged_note, drawable_analysis, save  # noqa: E402
from jaxsim.plotting.styles import outside, run_styles, run_title, wrap_title  # noqa: E402
from jaxsim.testbeds.knowledge_graph import LABELS, REPRESENTATIONS, geometry  # noqa: E402
from jaxsim.testbeds.knowledge_graph.task import SPLITS  # noqa: E402


def curves(out: Path, axes: list[str], rows: list[dict], metrics: dict) -> Path:
    """Evaluation-batch accuracy per split over training."""
    looks = run_styles(rows, axes, LABELS)
    fig, panels = plt.subplots(1, len(SPLITS), figsize=(13, 3.8), sharey=True)
    for p, split in zip(panels, SPLITS):
        for r in range(len(rows)):
            p.plot(metrics["step"], metrics[f"accuracy_{split}"][r], **looks.styles[r])
        p.set_title(f"{split} facts", fontsize=10)
        p.set_xlabel("training step")
        p.grid(alpha=0.3)
    panels[0].set_ylabel("accuracy of the answer")
    panels[0].set_ylim(-0.02, 1.02)
    note = diverged_note(diverged(rows))
    if note:
        fig.suptitle(note, fontsize=9)
    outside(panels[-1], handles=looks.handles)
    return save(fig, out, "knowledge_accuracy.png")


def exact(out: Path, doc: dict, axes: list[str], rows: list[dict]) -> Path:
    """Exact accuracy by kind over checkpoints, and the last site's ring score."""
    looks = run_styles(rows, axes, LABELS)
    order = {int(r["run_id"]): i for i, r in enumerate(rows)}
    fig, panels = plt.subplots(1, len(SPLITS) + 1, figsize=(16, 3.8))
    for run in doc["runs"]:
        look, steps = looks.styles[order[run["run_id"]]], run["steps"]
        for p, kind in zip(panels, SPLITS):
            if run["accuracy"][kind] is not None:
                p.plot(steps, np.array(run["accuracy"][kind], float), **look)
        ring = np.array(run["ring_neighbours"], float)[:, -1].mean(-1)
        panels[-1].plot(steps, ring, **{**look, "alpha": 0.5})
        if run.get("ring_neighbours_query"):
            query = np.array(run["ring_neighbours_query"], float)[:, -1].mean(-1)
            panels[-1].plot(steps, query, **look)
    for p, kind in zip(panels, SPLITS):
        p.set_title(f"{kind}: every fact, exact", fontsize=10)
        p.set_ylim(-0.02, 1.02)
    panels[0].set_ylabel("accuracy")
    chance = doc["runs"][0].get("ring_neighbours_chance")
    if chance is not None:
        panels[-1].axhline(chance, color="0.5", ls=":", lw=1)
    query = doc.get("query_sites") or []
    panels[-1].set_title(wrap_title(f"ring neighbours at {query[-1] if query else ''} (solid), "
                                    f"{doc['sites'][-1]} (faint); dotted: chance", 48),
                         fontsize=9)
    panels[-1].set_ylabel("4 nearest neighbours within ±2 on the cycle")
    panels[-1].set_ylim(-0.02, 1.02)
    for p in panels:
        p.set_xlabel("training step")
        p.grid(alpha=0.3)
    note = diverged_note(doc["diverged"])
    if note:
        fig.suptitle(note, fontsize=9)
    outside(panels[-1], handles=looks.handles)
    return save(fig, out, "knowledge_exact.png")


def _best(doc: dict) -> dict:
    def score(run):
        acc = run["accuracy"]
        return sum(acc[k][-1] for k in ("direct", "logical") if acc[k] is not None)
    return max(doc["runs"], key=score)


def projection(out: Path, doc: dict, axes: list[str], rows: list[dict], method: str) -> Path:
    """Rows = sites, columns = cycles: one 2-D projection of the best run's final entity
    representations, coloured by position on each cycle."""
    reps = np.load(Path(out) / REPRESENTATIONS)
    run = _best(doc)
    i = int(np.flatnonzero(reps["run_id"] == run["run_id"])[0])
    last = int(np.flatnonzero(reps["steps"][i] >= 0)[-1])
    order_CxN = reps["order"][i]
    names = [s for s in doc["sites"] if s in list(reps["sites"])]
    queries = [s for s in doc.get("query_sites") or []
               if "query_sites" in reps.files and s in list(reps["query_sites"])]
    num_cycles, n = order_CxN.shape
    rows_n = len(names) + len(queries)
    fig, grid = plt.subplots(rows_n, num_cycles, figsize=(3.2 * num_cycles, 3.0 * rows_n),
                             squeeze=False)

    def project(x):
        x = x[:, np.isfinite(x).all(0)]
        return geometry.pca2(x)[0] if method == "pca" else geometry.isomap2(x)

    for s, site in enumerate(names + queries):
        is_query = s >= len(names)
        if not is_query:
            xy = project(reps["representations"][i, last, list(reps["sites"]).index(site)])
        for c in range(num_cycles):
            if is_query:
                xy = project(reps["query_representations"][
                    i, last, list(reps["query_sites"]).index(site), c])
            ax = grid[s, c]
            ring = xy[order_CxN[c]]
            ax.plot(*np.vstack([ring, ring[:1]]).T, color="0.7", lw=0.6, zorder=1)
            ax.scatter(ring[:, 0], ring[:, 1], c=np.arange(len(ring)), cmap="twilight", s=14,
                       zorder=2)
            key = "ring_neighbours_query" if is_query else "ring_neighbours"
            score = doc_score(run, key, s - len(names) if is_query else s, last, c)
            ax.set_title(f"{site}, cycle {c}" + (f" (neighbours {score:.2f})"
                                                  if score is not None else ""), fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    title = run_title(rows[[int(r["run_id"]) for r in rows].index(run["run_id"])], axes, LABELS)
    fig.suptitle(wrap_title(f"{METHODS[method]} of entity representations, step {int(reps['steps'][i, last])}: {title}", 90),
                 fontsize=10)
    return save(fig, out, f"knowledge_{method}.png", rect=(0, 0, 1, 0.96))


METHODS = {"pca": "PCA", "isomap": "Isomap"}


def doc_score(run: dict, key: str, site: int, step: int, cycle: int) -> float | None:
    """A per-site, per-cycle score of analysis.json (None where absent)."""
    values = run.get(key)
    return None if not values else values[step][site][cycle]


def draw(request) -> list[Path]:
    out, axes, rows = request.out, request.axes, request.rows
    paths = [curves(out, axes, rows, request.metrics)]
    doc = drawable_analysis(out, "knowledge_graph")
    if doc is not None and doc["runs"] and (Path(out) / REPRESENTATIONS).is_file():
        paths += [exact(out, doc, axes, rows), projection(out, doc, axes, rows, "pca"),
                  projection(out, doc, axes, rows, "isomap")]
    return paths
