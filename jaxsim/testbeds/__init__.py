"""The testbed registry: `task.name` -> a `jaxsim.testbed.Testbed`.

A built-in testbed is a package here exporting `TESTBED`, registered by one line below (imported
only when used). Any other module on `PYTHONPATH` runs with ``task.name: MODULE:OBJECT``, e.g.
``my_testbed:TESTBED``.
"""
from __future__ import annotations

import difflib
import functools
import importlib

from jaxsim.errors import ConfigError
from jaxsim.testbed import Testbed

BUILTIN = {
    "markov_mixture": "jaxsim.testbeds.markov_mixture",
    "matrix_completion": "jaxsim.testbeds.matrix_completion",
    "concept_geometry": "jaxsim.testbeds.concept_geometry",
    "activations": "jaxsim.testbeds.activations",
    "sim": "jaxsim.testbeds.sim",
    "pcfg": "jaxsim.testbeds.pcfg",
    "graph_walk": "jaxsim.testbeds.graph_walk",
    "safety_pcfg": "jaxsim.testbeds.safety_pcfg",
    "safety_pcfg_finetune": "jaxsim.testbeds.safety_pcfg.finetune",
    "concept_images": "jaxsim.testbeds.concept_images",
    "knowledge_graph": "jaxsim.testbeds.knowledge_graph",
}


@functools.cache
def get(name: str) -> Testbed:
    """The testbed called `name`: a built-in name, or MODULE:OBJECT of a user's module."""
    if not isinstance(name, str):
        raise ConfigError(f"task.name must be a string, got {name!r}")
    if ":" in name:
        return _user(name)
    if name not in BUILTIN:
        close = difflib.get_close_matches(name, list(BUILTIN), n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"task.name must be one of {', '.join(BUILTIN)} or MODULE:OBJECT (a "
                          f"testbed of your own); got {name!r}{hint}")
    return importlib.import_module(BUILTIN[name]).TESTBED


def _user(name: str) -> Testbed:
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"task.name={name!r}: cannot import module {module_name!r} ({e}); "
                          f"is its folder on PYTHONPATH?") from None
    testbed = getattr(module, attr, None)
    if not isinstance(testbed, Testbed):
        raise ConfigError(f"task.name={name!r}: {module_name}.{attr} must be a "
                          f"jaxsim.testbed.Testbed, got {type(testbed).__name__}")
    return testbed


def builtin() -> dict[str, Testbed]:
    """Every built-in testbed by name (imports them all)."""
    return {name: get(name) for name in BUILTIN}


def of(spec_or_cfg) -> Testbed:
    """The testbed of a Spec or Config (by its task section's name)."""
    return get(spec_or_cfg.task.name)
