"""jaxsim: pure task generators and jit/vmap-compiled training loops that train whole
phase-diagram sweeps of small models as one program.

The Python API (`jaxsim.api`, loaded on first use so that `import jaxsim` stays cheap and does
not import JAX): `jaxsim.sweep`, `resume`, `analyze`, `plot`, `steer`, `edit`, `summary(DIR)` (a
DataFrame), and `open(DIR)` -> `Sweep`;
`compile_cache(DIR | "off")` moves or stops the persistent compilation cache.
"""
__version__ = "0.1.0"
__all__ = ["Sweep", "analyze", "compile_cache", "edit", "open", "plot", "resume", "steer",
           "summary", "sweep"]


def __getattr__(name: str):
    if name in __all__:
        from jaxsim import api
        return getattr(api, name)
    raise AttributeError(f"module 'jaxsim' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
