"""Pure task generators. Each task module provides `train_batch`, `eval_batch`, `SPLITS`,
`vocab_size`, `seq_len` and a `Batch` carrying the ground truth (the true next-token
distribution, the full matrix)."""
from types import ModuleType

from jaxsim.tasks import markov_mixture, matrix_completion

TASKS: dict[str, ModuleType] = {"markov_mixture": markov_mixture,
                                "matrix_completion": matrix_completion}


def get(name: str) -> ModuleType:
    return TASKS[name]
