"""The results directory's files: their names, writes a reader never sees half done, and the
checks of an output directory before anything is written into it (one line when it cannot be:
a path through a file, no permission, a lost config.yaml)."""
from __future__ import annotations

import os
from pathlib import Path

import jax

from jaxsim import config as cfglib

CONFIG, PLAN, RUNS, METRICS, CHECKPOINTS, FIGURES, ANALYSIS, LOCK = (
    "config.yaml", "plan.json", "runs.csv", "metrics.npz", "checkpoints", "figures",
    "analysis.json", ".lock")


def atomic_write(path: Path, write) -> None:
    """Call `write(tmp_path)`, then rename over `path`: readers never see a half-written file.
    In a multi-host sweep only process 0 writes (the others hold the same content)."""
    if jax.process_index() != 0:
        return
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def is_empty(out: Path) -> bool:
    """A directory that holds nothing but (perhaps) a released writer lock."""
    return all(p.name == LOCK for p in Path(out).iterdir())


def make_output_dir(out: Path) -> bool:
    """Create `out` (and its parents) for a new sweep; True if it was created here. One line
    naming the problem when it cannot be: a path through a file, no permission, ..."""
    out = Path(out)
    existed = out.is_dir()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise cfglib.ConfigError(f"--out '{out}' is a file, not a directory") from None
    except NotADirectoryError:
        raise cfglib.ConfigError(f"--out '{out}' lies under a file (a path component is not a "
                                 f"directory); choose another --out") from None
    except OSError as e:
        raise cfglib.ConfigError(f"cannot create --out '{out}': {e.strerror}") from None
    check_writable(out)
    return not existed


def check_writable(out: Path) -> None:
    """One line if this process cannot write into the directory `out`."""
    probe = Path(out) / f".write_test.{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise cfglib.ConfigError(f"cannot write into '{out}' ({e.strerror}); check its "
                                 f"permissions or choose another directory") from None


def check_config(out: Path) -> None:
    """One line when `out` holds a sweep's files but has lost its config.yaml (the resolved
    config, which the other files do not hold whole: it cannot be rebuilt)."""
    out = Path(out)
    if out.is_dir() and not (out / CONFIG).is_file() and any(
            (out / name).exists() for name in (PLAN, RUNS, METRICS, CHECKPOINTS)):
        raise cfglib.ConfigError(f"'{out}' has lost its {CONFIG} (the sweep's resolved config, "
                                 f"which cannot be rebuilt from the other files): copy it back, "
                                 f"or sweep again into a new --out")
