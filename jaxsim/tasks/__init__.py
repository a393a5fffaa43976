"""Pure task generators. Each task module provides `train_batch`, `eval_batch`, `SPLITS`,
`vocab_size`, `seq_len` and a `Batch` carrying the ground truth (the true next-token
distribution, the full matrix)."""
from types import ModuleType

from jaxsim.tasks import (concept_geometry, graph_walk, markov_mixture, matrix_completion, pcfg,
                          sim)

TASKS: dict[str, ModuleType] = {"markov_mixture": markov_mixture,
                                "matrix_completion": matrix_completion,
                                "concept_geometry": concept_geometry, "sim": sim,
                                "pcfg": pcfg, "graph_walk": graph_walk}


def get(name: str) -> ModuleType:
    return TASKS[name]
