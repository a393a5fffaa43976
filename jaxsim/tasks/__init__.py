"""Pure task generators. Each task module provides `train_batch`, `eval_batch`, `SPLITS`,
`vocab_size` and a `Batch` carrying the ground-truth next-token distribution."""
from types import ModuleType

from jaxsim.tasks import markov_mixture

TASKS: dict[str, ModuleType] = {"markov_mixture": markov_mixture}


def get(name: str) -> ModuleType:
    return TASKS[name]
