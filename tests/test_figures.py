"""Honest figures (issue 17), on hand-made files so each check can fail for one reason: the
phase diagram's undecided cells and true step positions, matrix completion's per-run copy
baselines and censored plateaus, oracle lines per group where they differ, every swept axis
told apart, keys off the data, titles naming a run's axis values."""
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxsim import plotting  # noqa: E402
from jaxsim.plotting import styles  # noqa: E402
from jaxsim.testbeds.markov_mixture import phase_figures, verdicts  # noqa: E402
from jaxsim.testbeds.markov_mixture import figures as markov_figures  # noqa: E402
from jaxsim.testbeds.matrix_completion import figures as completion_figures  # noqa: E402

ALGORITHMS = ["unigram_retrieval", "bigram_retrieval", "unigram_inference", "bigram_inference"]
STEPS = [10, 20, 50, 100, 300, 1000]        # log-spaced saved steps, as a sweep keeps them
LENGTHS = [1, 3, 10]


@pytest.fixture
def kept(monkeypatch):
    """Figures `save` hands back instead of writing and closing (name -> Figure)."""
    figures = {}

    def keep(fig, out, name, rect=(0, 0, 1, 1)):
        fig.tight_layout(rect=rect)
        figures[name] = fig
        return name

    for module in (plotting, markov_figures, phase_figures, completion_figures):
        monkeypatch.setattr(module, "save", keep, raising=False)
    yield figures
    plt.close("all")


def _doc(kl_by_n: dict) -> dict:
    """An analysis.json of one seed per N with KL(alg || model) = kl_by_n[N] [S, G, A]."""
    runs = []
    for run_id, (n, kl) in enumerate(kl_by_n.items()):
        block = {"kl_alg_to_model": kl.tolist(), "kl_model_to_alg": kl.tolist(),
                 "mixture_weights": np.full_like(kl, 0.25).tolist()}
        runs.append({"run_id": run_id, "seed": 0, "axes": {"task.num_chains": n},
                     "steps": STEPS, "status": "done", "id": block, "ood": block})
    return {"algorithms": ALGORITHMS, "splits": ["id", "ood"], "context_lengths": LENGTHS,
            "runs": runs}


def _clear(winner: int) -> np.ndarray:
    kl = np.full((len(STEPS), len(LENGTHS), 4), 1.0)
    kl[..., winner] = 0.1
    return kl


def test_a_near_tie_is_undecided_and_a_clear_winner_is_not():
    assert verdicts.verdict([0.010, 0.012, 0.5, 0.5]) == verdicts.UNDECIDED     # the issue's
    assert verdicts.verdict([0.0100, 0.0121, 0.5, 0.5]) == 0
    assert verdicts.verdict([0.5, 0.1, np.nan, 0.3]) == verdicts.DIVERGED
    kl = _clear(1)
    kl[-1, -1] = [0.010, 0.5, 0.011, 0.5]         # N = 512's last cell: a near-tie
    codes = phase_figures.cell_codes(np.stack([_clear(1)[:, -1], kl[:, -1]]))
    assert codes[0].tolist() == [1] * len(STEPS)
    assert codes[1, :-1].tolist() == [1] * (len(STEPS) - 1)
    assert codes[1, -1] == phase_figures.UNDECIDED_CODE


def test_the_phase_diagram_labels_the_tie_and_places_cells_at_the_saved_steps(kept, tmp_path):
    kl = _clear(2)
    kl[-1, -1] = [0.010, 0.5, 0.012, 0.5]
    phase_figures.phase_diagram(tmp_path, _doc({2: _clear(1), 512: kl}))
    fig = kept["phase_diagram.png"]
    step_panel = fig.axes[0]
    mesh = step_panel.collections[0]
    drawn = mesh.get_array().reshape(2, len(STEPS))
    assert drawn[0].tolist() == [1] * len(STEPS)                    # N = 2: bigram retrieval
    assert drawn[1, -1] == phase_figures.UNDECIDED_CODE and drawn[1, 0] == 2
    assert any("undecided" in t.get_text() for t in fig.legends[0].get_texts())
    edges = mesh.get_coordinates()[0, :, 0]                          # the cells' x edges
    np.testing.assert_allclose(edges, phase_figures.log_edges(STEPS))
    assert all(a < s < b for a, s, b in zip(edges[:-1], STEPS, edges[1:]))
    np.testing.assert_array_equal(step_panel.xaxis.get_minor_locator().locs, STEPS)  # ticks
    marks = [line for line in step_panel.lines if line.get_marker() == "v"]
    np.testing.assert_array_equal(marks[0].get_xdata(), STEPS)      # a ▼ per checkpoint
    assert step_panel.get_xscale() == "log"
    np.testing.assert_array_equal(fig.axes[1].xaxis.get_minor_locator().locs, LENGTHS)


def _mc_metrics():
    """4 runs whose copy baselines differ (0.020..0.034), each sitting exactly on its own."""
    copy = np.array([0.020, 0.027, 0.030, 0.034])
    copy_masked = np.array([0.102, 0.106, 0.110, 0.113])
    e = 5
    flat = lambda v: np.repeat(v[:, None], e, axis=1)      # noqa: E731
    return {"step": np.arange(1, e + 1) * 10, "eval_mse_id": flat(copy).copy(),
            "eval_mse_masked_id": flat(copy_masked).copy(),
            "eval_mse_observed_id": np.full((4, e), 1e-3), "copy_mse_id": flat(copy),
            "copy_mse_masked_id": flat(copy_masked)}


def _mc_rows():
    return [{"run_id": str(i), "seed": str(i % 2), "task.mask_prob": m, "train.lr": lr,
             "status": "done"}
            for i, (m, lr) in enumerate([("0.2", "0.001"), ("0.2", "0.003"),
                                         ("0.3", "0.001"), ("0.3", "0.003")])]


def test_matrix_completion_draws_each_run_against_its_own_copy_baseline(kept, tmp_path):
    metrics = _mc_metrics()
    metrics["eval_mse_masked_id"][1, -1] *= 0.5               # run 1 drops below its own copy
    rows = _mc_rows()
    completion_figures.loss_curves(tmp_path, ["task.mask_prob", "train.lr"], rows, metrics)
    fig = kept["loss_curves.png"]
    everything, masked = fig.axes[0], fig.axes[1]
    curves = [line.get_ydata() for line in everything.lines if len(line.get_ydata()) == 5]
    np.testing.assert_allclose(np.stack(curves), 1.0)             # on their own baselines
    curves = [line.get_ydata() for line in masked.lines if len(line.get_ydata()) == 5]
    expected = metrics["eval_mse_masked_id"] / metrics["copy_mse_masked_id"][:, :1]
    np.testing.assert_allclose(np.stack(curves), expected)
    assert [line.get_ydata()[0] for line in masked.lines if len(line.get_ydata()) == 2] == [1]
    # every swept axis told apart: colour by mask probability, line style by learning rate
    drawn = [line for line in everything.lines if len(line.get_ydata()) == 5]
    looks = {(tuple(line.get_color()), line.get_linestyle()) for line in drawn}
    assert len(looks) == 4
    legend = fig.axes[2].get_legend()
    assert legend is not None and legend.get_bbox_to_anchor().x0 > fig.axes[2].bbox.x1 - 1
    texts = [t.get_text() for t in legend.get_texts()]
    assert {"mask probability", "learning rate", "  0.2", "  0.001"} <= set(texts)


def test_censored_plateaus_are_hatched_not_coloured(kept, tmp_path):
    rows = _mc_rows()
    found = [{"length": 300, "dropped": True}, {"length": 500, "dropped": True},
             {"length": 400, "dropped": False}, {"length": 380, "dropped": True}]
    y, x, grid, censored, runs, lost = completion_figures.plateau_cells(
        rows, found, "task.mask_prob", "train.lr")
    assert censored.tolist() == [[0, 0], [1, 0]] and runs.tolist() == [[1, 1], [1, 1]]
    assert not lost.any()
    (tmp_path / "analysis.json").write_text(json.dumps({
        "task": "matrix_completion", "plateau_rule": "start; end",
        "runs": [{"run_id": i, "plateau": dict(f, start=0, end=None)} for i, f in
                 enumerate(found)]}))
    completion_figures.plateau_length(tmp_path, ["task.mask_prob", "train.lr"], rows,
                                      {"step": np.array([100, 400])})
    ax = kept["plateau_length.png"].axes[0]
    image = ax.get_images()[0].get_array()
    assert np.ma.is_masked(image[1, 0]) and image[0, 0] == 300       # censored: no colour
    assert any(t.get_text().startswith("≥ 400\n(1 of 1 runs: no drop by 400)") for t in ax.texts)
    assert any(p.get_hatch() == "///" for p in ax.patches)


def test_oracle_lines_per_group_where_they_differ(kept, tmp_path):
    rows = [{"run_id": str(i), "seed": str(i % 2), "task.num_chains": n, "status": "done"}
            for i, n in enumerate(["2", "2", "512", "512"])]
    e = 3
    metrics = {"step": np.array([10, 20, 30]),
               "eval_loss_id": np.full((4, e), 2.2), "eval_loss_ood": np.full((4, e), 2.5),
               "oracle_loss_id": np.repeat(np.array([1.90, 1.90, 1.94, 1.94])[:, None], e, 1),
               "oracle_loss_ood": np.full((4, e), 1.93)}
    markov_figures.loss_curves(tmp_path, ["task.num_chains"], rows, metrics, num_states=10)
    in_dist, out_dist = kept["loss_curves.png"].axes[:2]

    def dashed(ax):
        return sorted(round(float(line.get_ydata()[0]), 3) for line in ax.lines
                      if line.get_linestyle() not in ("-", ":"))
    assert dashed(in_dist) == [1.90, 1.94]             # each N's own oracle
    assert dashed(out_dist) == [1.93]                  # equal: one line
    assert any(round(float(line.get_ydata()[0]), 4) == round(np.log(10), 4)
               for line in in_dist.lines if line.get_linestyle() == ":")


def test_run_styles_give_every_axis_its_own_channel_and_titles_name_values():
    rows = [{"run_id": str(i), "seed": "0", "a": a, "b": b, "c": c}
            for i, (a, b, c) in enumerate([(1, "x", 5), (1, "y", 5), (2, "x", 6), (2, "y", 6)])]
    looks = styles.run_styles(rows, ["a", "b", "c"])
    keys = {(tuple(s["color"]), str(s["ls"]), s["marker"]) for s in looks.styles}
    assert len(keys) == 4
    assert styles.run_title(rows[1], ["a", "b"]) == "run 1: a = 1, b = y, seed 0"
    assert styles.differs(np.array([1.90, 1.94])) and not styles.differs(np.array([1.0, 1.0]))
