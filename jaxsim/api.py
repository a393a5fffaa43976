"""The Python API, what a notebook uses (docs/python-api.md): `sweep`, `resume`, `analyze` and
`plot` do what the CLI commands of the same names do; `open(DIR)` reads a results directory as a
`Sweep` (read-only and lazy: each file is read when first asked for, so open a sweep that is
still training again to see its progress). Bad input raises `jaxsim.config.ConfigError` with one
line naming the value and what is allowed. Importing this module does not import JAX.

Log lines go through `logging` (logger "jaxsim", see `jaxsim.logs`): unless the program gave
that logger a handler, these calls print the CLI's lines to stderr; `progress` is the bar alone.
"""
from __future__ import annotations

import operator
import os
from pathlib import Path
from typing import Any

from jaxsim import config as cfglib
from jaxsim import logs, program_caches, xla_cache
from jaxsim.config import ConfigError
from jaxsim.saved import Sweep

def use_every_core() -> None:
    """On a CPU host, one XLA device per core (`JAXSIM_CPU_DEVICES`, default os.cpu_count()),
    unless XLA_FLAGS already forces a count or JAX has started: the run axis is then sharded over
    the cores, each a single-threaded partition, which trains tiny models faster than one device
    spreading each small op over threads (benchmarks/devices.py: 1.6x at 64 quickstart runs on 2
    cores). GPUs and TPUs are unaffected (the setting only shapes the CPU backend)."""
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return
    count = int(os.environ.get("JAXSIM_CPU_DEVICES") or os.cpu_count() or 1)
    try:
        import jax
        jax.config.update("jax_num_cpu_devices", max(count, 1))
    except RuntimeError:    # JAX already running (e.g. a notebook that used it): keep its devices
        pass


def setup_jax(compile_cache: str | os.PathLike | None = None) -> None:
    """The process-level JAX setup of every command and API call: one CPU device per core
    (`use_every_core`) and the persistent compilation cache (`jaxsim.xla_cache`; `compile_cache`
    = a directory or "off", None = JAXSIM_CACHE_DIR or the default), so a second invocation
    with the same shapes loads its programs instead of compiling them. A long session near its
    memory-map limit lets its cached programs go first (`jaxsim.program_caches`)."""
    use_every_core()
    xla_cache.enable(compile_cache)
    program_caches.relieve()


def compile_cache(directory: str | os.PathLike) -> Path | None:
    """Move this process's persistent compilation cache to `directory`, or turn it off with
    "off"; returns its directory (None when off). Programs this process compiled already stay
    compiled. Without a call: JAXSIM_CACHE_DIR, else ~/.cache/jaxsim/xla (docs/sweeps.md)."""
    return xla_cache.enable(directory)


def _override_strings(overrides: list[str] | dict | None) -> list[str]:
    """KEY=VALUE strings from a list of them or a {dotted key: value} dict."""
    if isinstance(overrides, dict):
        import yaml
        flow = lambda v: yaml.safe_dump(v, default_flow_style=True).removesuffix("\n...\n")  # noqa: E731
        return [f"{k}={flow(v).strip()}" for k, v in overrides.items()]
    return list(overrides or [])


def _config(config: Any, overrides: list[str] | dict | None) -> cfglib.Config:
    """A Config from a YAML path, a dict of sections or a Config, with KEY=VALUE overrides
    (or a {dotted key: value} dict of them)."""
    overrides = _override_strings(overrides)
    if isinstance(config, cfglib.Config):
        if overrides:
            raise ConfigError("overrides apply to a config path or dict; apply them to a "
                              "jaxsim.config.Config with jaxsim.config.replace_key")
        return config
    if isinstance(config, dict):
        return cfglib.from_dict(cfglib.apply_overrides(config, overrides))
    if isinstance(config, (str, os.PathLike)):
        return cfglib.load(config, overrides)
    raise ConfigError(f"config must be a YAML path, a dict or a jaxsim.config.Config, got "
                      f"{type(config).__name__}")


def sweep(config: str | os.PathLike | dict | cfglib.Config,
          overrides: list[str] | dict | None = None, out: str | os.PathLike | None = None,
          progress: bool = True) -> Sweep:
    """Train every run of a config's grid into `out` (`jaxsim sweep`) and open it.

    `config`: a YAML path, a dict of sections ({"task": {...}, "sweep": {...}}) or a Config;
    `overrides`: KEY=VALUE strings as on the command line (or a {dotted key: value} dict);
    `out`: the results directory (default results/<config file stem>; a dict config needs it).
    Draws the figures when `sweep.plot` is set, as the CLI does."""
    setup_jax()
    logs.default_handler()
    cfg = _config(config, overrides)
    if out is None:
        if not isinstance(config, (str, os.PathLike)):
            raise ConfigError("a config given as a dict needs out=DIR (the results directory; "
                              "a config file's default is results/<its name>)")
        out = Path("results") / Path(config).stem
    from jaxsim import sweeps
    out = sweeps.start(cfg, Path(out), progress=progress)
    _figures_if_configured(out)
    return Sweep(out)


def resume(directory: str | os.PathLike, progress: bool = True) -> Sweep:
    """Continue an interrupted sweep (or shard) from its checkpoints (`jaxsim resume`)."""
    setup_jax()
    logs.default_handler()
    from jaxsim import results, sweeps
    finished = results.is_finished(Path(directory))   # then nothing is trained or redrawn
    out = sweeps.resume(Path(directory), progress=progress)
    if not finished:
        _figures_if_configured(out)
    return Sweep(out)


def analyze(directory: str | os.PathLike, sequences: int = 64,
            context_lengths: list[int] | None = None) -> Sweep:
    """The testbed's analysis of every saved checkpoint of every run (`jaxsim analyze`): writes
    DIR/analysis.json (then `.analysis`). `sequences` = analysis examples per run and split;
    `context_lengths` = the lengths analysed (for testbeds that take them)."""
    setup_jax()
    logs.default_handler()
    if isinstance(sequences, bool) or not isinstance(sequences, int) or sequences < 1:
        raise ConfigError(f"sequences must be an integer >= 1, got {sequences!r}")
    try:
        lengths = sorted({operator.index(v) for v in context_lengths or ()}) or None
    except TypeError:
        raise ConfigError(f"context_lengths must be integers, got {context_lengths!r}") from None
    from jaxsim.analysis import driver
    driver.analyze(Path(directory), sequences, lengths)
    return Sweep(directory)


def plot(directory: str | os.PathLike, num_chains: int | None = None) -> list[Path]:
    """(Re)draw DIR/figures/ from the saved files (`jaxsim plot`); returns the written paths.
    `num_chains`: the task diversity of the distance curves (default the middle value)."""
    out = Path(directory)
    if not out.is_dir():
        raise ConfigError(f"results directory '{out}' does not exist")
    from jaxsim import results
    results.check_config(out)
    from jaxsim import editing, steering
    if (out / editing.CONFIG_FILE).is_file():            # an edit study's directory
        from jaxsim.editing import figures as edit_figures
        results.check_writable(out)
        return edit_figures.draw(out)
    if (out / steering.CONFIG_FILE).is_file():           # a steering study's directory
        from jaxsim import results
        from jaxsim.steering import figures as steering_figures
        results.check_writable(out)
        return steering_figures.draw(out)
    if not (out / "metrics.npz").is_file():
        raise ConfigError(f"'{out}' has no metrics.npz; finish the sweep first "
                          f"(`jaxsim resume {out}`)")
    import jax
    if jax.process_index() != 0:  # a multi-host sweep draws its figures once
        return []
    from jaxsim import results
    results.check_writable(out)
    from jaxsim.plotting import figures
    return figures.draw_all(out, num_chains=num_chains)


def _figures_if_configured(out: Path) -> None:
    if cfglib.load(out / "config.yaml").sweep.plot:
        for path in plot(out):
            logs.RESULT.info(f"jaxsim: wrote {path}")


def steer(directory: str | os.PathLike, config: str | os.PathLike | dict | None = None,
          overrides: list[str] | dict | None = None, out: str | os.PathLike | None = None,
          figures: bool = True) -> Path:
    """Promote and suppress a behaviour in every run of the trained gpt sweep `directory` by
    each steering method, layer and multiplier (`jaxsim steer`, docs/steering.md); returns the
    output directory (its steering.csv has one row per run x method x variant x layer x
    direction x multiplier). `config`: a steering YAML path or a {"steer": {...}} dict (None:
    the defaults); `overrides`: steer.KEY=VALUE strings or a {"steer.KEY": value} dict; `out`:
    default results/<config file stem> (a dict or None config needs it)."""
    from jaxsim.steering import config as steer_config, driver
    return _study("steer", directory, config, overrides, out, figures, steer_config,
                  driver.steer)


def edit(directory: str | os.PathLike, config: str | os.PathLike | dict | None = None,
         overrides: list[str] | dict | None = None, out: str | os.PathLike | None = None,
         figures: bool = True) -> Path:
    """Edit facts of every run of the trained knowledge_graph gpt sweep `directory` with each
    editing method (ROME, MEMIT, fine-tuning, AlphaEdit) at each cycle distance (`jaxsim edit`,
    docs/editing.md); returns the output directory (its edits.csv has one row per run x method
    x distance x edit). `config`: an editing YAML path or an {"edit": {...}} dict (None: the
    defaults); `overrides`: edit.KEY=VALUE strings or an {"edit.KEY": value} dict; `out`:
    default results/<config file stem> (a dict or None config needs it)."""
    from jaxsim.editing import config as edit_config, driver
    return _study("edit", directory, config, overrides, out, figures, edit_config, driver.edit)


def _study(command: str, directory, config, overrides, out, figures: bool, section, run) -> Path:
    """A post-hoc study of the saved sweep `directory` (steer, edit): its one-section config
    (`section`: the module with from_dict / apply_overrides / load) from a file or a dict with
    overrides, `run(directory, config, out)`, then its figures."""
    setup_jax()
    logs.default_handler()
    overrides = _override_strings(overrides)
    if isinstance(config, dict):
        scfg = section.from_dict(section.apply_overrides(config, overrides))
    else:
        scfg = section.load(config, overrides)
    if out is None:
        if not isinstance(config, (str, os.PathLike)):
            raise ConfigError(f"jaxsim.{command} needs out=DIR when the config is not a file")
        out = Path("results") / Path(config).stem
    if not Path(directory).is_dir():
        raise ConfigError(f"results directory '{directory}' does not exist")
    done = run(Path(directory), scfg, Path(out))
    if figures:
        for path in plot(done):
            logs.RESULT.info(f"jaxsim: wrote {path}")
    return done


def summary(directory: str | os.PathLike, other: str | os.PathLike | None = None):
    """The summary table of a results directory (`jaxsim summary DIR`): a pandas DataFrame,
    one row per combination of the axes' values, each summary column's mean and std over seeds
    (`Sweep.summary`). With `other`, the two side by side (`jaxsim summary DIR OTHER`): joined
    on their common axis keys, columns suffixed _A and _B, and `<name>_diff` = B's mean - A's."""
    table = Sweep(directory).summary
    if other is None:
        return table
    from jaxsim import summaries
    return summaries.compare(table, Sweep(other).summary)


def open(directory: str | os.PathLike) -> Sweep:  # noqa: A001 (jaxsim.open, like io.open)
    """The results directory `directory` as a `Sweep` (read-only, lazy)."""
    return Sweep(directory)
