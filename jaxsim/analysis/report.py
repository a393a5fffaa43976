"""`jaxsim analyze DIR`: analysis of every run at every saved checkpoint, by task.

Reads config.yaml, runs.csv, metrics.npz and the orbax checkpoints (never re-trains); one
jit(vmap) call per chunk (and split), vmapped over the chunk's runs, lax.map over its
checkpoints. Writes DIR/analysis.json (plus a task's own .npz where it has one).

`ANALYSES` maps each task to its report, whose docstring documents its analysis.json:
    markov_mixture — the four ICL algorithms (`analysis/icl_report.py`)
    matrix_completion — plateau, diagnostics, baselines (`analysis/completion_report.py`)
    sim — structured identity mapping (`analysis/sim.py`, from metrics.npz, no checkpoints)
    concept_geometry, activations — what each SAE recovers (`analysis/concepts_report.py`)
    pcfg — grammaticality of the models' own samples (`analysis/pcfg_report.py`)
    graph_walk — in-context representations of the graph (`analysis/graph_report.py`)
Loading the runs and checkpoints is shared (`analysis/checkpoints.py`).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from jaxsim import config as cfglib
from jaxsim import results
from jaxsim.analysis import (completion_report, concepts_report, graph_report, icl_report,
                             pcfg_report)
from jaxsim.analysis import sim as simlib
from jaxsim.config import ConfigError


class TaskAnalysis(NamedTuple):
    """One task's report: `run(out, cfg, rows, num_sequences)`, plus `lengths` when
    `context_lengths` (the tasks analysed at several context lengths take --context-lengths)."""
    run: Callable[..., dict]
    context_lengths: bool = False


ANALYSES: dict[str, TaskAnalysis] = {
    "markov_mixture": TaskAnalysis(icl_report.analyze_icl, context_lengths=True),
    "graph_walk": TaskAnalysis(graph_report.analyze_graph, context_lengths=True),
    "sim": TaskAnalysis(simlib.analyze),
    "matrix_completion": TaskAnalysis(completion_report.analyze_completion),
    "concept_geometry": TaskAnalysis(concepts_report.analyze_concepts),
    "activations": TaskAnalysis(concepts_report.analyze_concepts),
    "pcfg": TaskAnalysis(pcfg_report.analyze_pcfg),
}


def analyze(out: Path, num_sequences: int = 64, lengths: list[int] | None = None) -> Path:
    """Analyse a sweep directory by its task; `num_sequences` = analysis sequences (matrices)."""
    out = Path(out)
    if not (out / results.CONFIG).is_file() or not (out / results.RUNS).is_file():
        raise ConfigError(f"'{out}' is not a sweep directory (needs {results.CONFIG} and "
                          f"{results.RUNS})")
    cfg = cfglib.load(out / results.CONFIG)
    rows = results.read_runs(out)
    task = ANALYSES[cfg.task.name]
    if not task.context_lengths and lengths:
        takes = " or ".join(name for name, a in ANALYSES.items() if a.context_lengths)
        raise ConfigError(f"--context-lengths applies to task.name={takes} only")
    if task.context_lengths:
        doc = task.run(out, cfg, rows, num_sequences, lengths)
    else:
        doc = task.run(out, cfg, rows, num_sequences)
    path = out / results.ANALYSIS
    results.atomic_write(path, lambda p: p.write_text(json.dumps(doc)))
    return path
