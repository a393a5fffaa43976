"""The writer lock of a results directory: one process at a time trains or analyses it."""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

import jax

from jaxsim import config as cfglib
from jaxsim.results.files import LOCK


@contextlib.contextmanager
def writer_lock(out: Path, what: str):
    """Hold the results directory's exclusive writer lock while `what` (sweep, resume, analyze)
    writes into it: an flock on DIR/.lock, which the OS releases when the process ends however it
    ends (so a killed sweep never leaves a stale lock). A second writer gets one line naming the
    holder's pid. Only process 0 of a multi-host sweep writes, so only it locks."""
    if jax.process_index() != 0:
        yield
        return
    path = Path(out) / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise cfglib.ConfigError(f"cannot write into '{out}' ({e.strerror}); check its "
                                 f"permissions") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "a process"
        os.close(fd)
        raise cfglib.ConfigError(f"'{out}' is in use by another jaxsim process ({holder}); "
                                 f"wait for it to finish, or stop it and run this again") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}, jaxsim {what}".encode(), 0)
    try:
        yield
    finally:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
