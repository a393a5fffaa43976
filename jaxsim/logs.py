"""jaxsim's log lines, through the standard `logging` module.

Every module logs to its own logger under "jaxsim" (`logging.getLogger(__name__)`): INFO for
the default lines (the plan, each evaluation, compile and wall times), DEBUG for detail
(per-chunk compiles, restores, saves, timings), WARNING for what went wrong but was handled
(a damaged checkpoint set aside). Lines that name what a command produced (a results directory,
a figure, analysis.json) go to `RESULT` ("jaxsim.result"), which `--quiet` keeps.

Importing jaxsim configures nothing. The CLI calls `configure` (one handler on the "jaxsim"
logger); the Python API calls `default_handler`, which adds the same handler unless the program
gave the "jaxsim" logger one of its own, so a notebook sees the lines the CLI prints. Both stop
the lines from also reaching the root logger: importing orbax (through absl) gives the root
logger a handler of its own, which would print each line twice.
"""
from __future__ import annotations

import logging
import sys

LOG = logging.getLogger("jaxsim")
RESULT = logging.getLogger("jaxsim.result")
QUIET, DEFAULT, VERBOSE = -1, 0, 1
LEVELS = {QUIET: logging.WARNING, DEFAULT: logging.INFO, VERBOSE: logging.DEBUG}


class StderrHandler(logging.Handler):
    """Each message as is, on the current `sys.stderr`, above a running progress bar (tqdm.write);
    one process of a multi-host sweep writes (the others would repeat its lines)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            jax = sys.modules.get("jax")
            if jax is not None and record.levelno < logging.WARNING and jax.process_index() != 0:
                return
            from tqdm.auto import tqdm
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 (logging's contract: a failing handler never raises)
            self.handleError(record)


def _ours() -> list[logging.Handler]:
    return [h for h in LOG.handlers if isinstance(h, StderrHandler)]


def configure(verbosity: int = DEFAULT) -> None:
    """The CLI's logging: one `StderrHandler` on "jaxsim" at INFO (DEFAULT), WARNING plus the
    result lines (QUIET) or DEBUG (VERBOSE). Called again, it replaces its own handler."""
    for handler in _ours():
        LOG.removeHandler(handler)
    LOG.addHandler(StderrHandler())
    LOG.propagate = False
    LOG.setLevel(LEVELS[verbosity])
    RESULT.setLevel(logging.INFO if verbosity == QUIET else logging.NOTSET)


def default_handler() -> None:
    """The Python API's logging: the CLI's default (INFO on stderr) unless the program gave the
    "jaxsim" logger a handler (then that handler, and the program's levels, decide)."""
    if not LOG.handlers:
        LOG.addHandler(StderrHandler())
        LOG.propagate = False
        if LOG.level == logging.NOTSET:
            LOG.setLevel(logging.INFO)
