"""The persistent XLA compilation cache: compile a program once per machine, not once per
invocation (docs/sweeps.md, "Compilation cache").

A researcher re-runs the same shapes with another learning rate, seed count or a typo fixed:
`sweep`, `resume`, `analyze` and every shard on the machine compile the same programs. JAX can
keep compiled executables on disk, keyed by the program, its shapes, the devices, the compile
options and the jax/jaxlib versions; jaxsim turns that on for its CLI and Python API.

Where (first match wins):
1. the CLI's `--compile-cache DIR|off`, or `jaxsim.compile_cache(DIR | "off")` in Python;
2. the environment variable JAXSIM_CACHE_DIR (a directory; "off", "none", "0" or empty: no cache);
3. a cache directory already given to JAX (JAX_COMPILATION_CACHE_DIR or
   `jax.config.update("jax_compilation_cache_dir", ...)`);
4. $XDG_CACHE_HOME/jaxsim/xla, else ~/.cache/jaxsim/xla (made with mode 0700: an entry is code
   the process will run, so the directory must be writable by you alone).

Programs that took at least MIN_COMPILE_SECONDS to compile are kept (JAX's
JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS overrides it). The cache is bounded: past
MAX_BYTES (or JAX_COMPILATION_CACHE_MAX_SIZE) the least recently used entries are removed.

Concurrent processes (shards, two terminals, pytest-xdist workers) may share the directory:
JAX's own file cache writes an entry in place (a reader racing the writer, or a writer killed
mid-write, leaves a truncated file that every later process fails to load), so jaxsim installs
`AtomicFileCache`, which writes each entry to a temporary name and renames it into place: a
reader sees a whole entry or none. Its files are JAX's (`<key>-cache`): a directory can be
shared with plain JAX processes.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

LOG = logging.getLogger(__name__)

ENV = "JAXSIM_CACHE_DIR"
OFF_VALUES = {"", "off", "none", "0", "false", "no"}
MIN_COMPILE_SECONDS = 0.2   # a cache load takes milliseconds; JAX's tiny eager ops stay out
MAX_BYTES = 4 * 2 ** 30
SUFFIX = "-cache"           # JAX's file name for an entry: <key>-cache

_state: dict = {"directory": None, "configured": False}


def default_directory() -> Path:
    """$XDG_CACHE_HOME/jaxsim/xla, else ~/.cache/jaxsim/xla."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jaxsim" / "xla"


def resolve(choice: str | os.PathLike | None = None) -> Path | None:
    """The cache directory for `choice` (a directory or "off"; None = not given), following the
    order in this module's docstring; None = no cache."""
    if choice is None:
        choice = os.environ.get(ENV)
    if choice is None:
        import jax
        if not jax.config.jax_enable_compilation_cache:   # JAX_ENABLE_COMPILATION_CACHE=false
            return None
        choice = jax.config.jax_compilation_cache_dir or default_directory()
    if str(choice).strip().lower() in OFF_VALUES:
        return None
    return Path(choice).expanduser()


class AtomicFileCache:
    """JAX's compilation-cache interface (`get`/`put` of bytes by key) over one directory, with
    atomic writes (temporary file + rename) and a size bound (least recently used entries
    removed first; a read refreshes an entry's modification time)."""

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES) -> None:
        self._path = Path(path)
        self._path.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.max_bytes = max_bytes

    def get(self, key: str) -> bytes | None:
        entry = self._path / f"{key}{SUFFIX}"
        try:
            value = entry.read_bytes()
        except FileNotFoundError:   # never written, or removed by another process's eviction
            return None
        try:
            os.utime(entry)
        except OSError:
            pass
        return value

    def put(self, key: str, value: bytes) -> None:
        entry = self._path / f"{key}{SUFFIX}"
        if entry.exists():
            return
        fd, tmp = tempfile.mkstemp(dir=self._path, prefix=f".{key}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(value)
            os.replace(tmp, entry)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._evict()

    def _evict(self) -> None:
        if self.max_bytes < 0:
            return
        entries = []
        for p in self._path.glob(f"*{SUFFIX}"):
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            entries.append((st.st_mtime, st.st_size, p))
        total = sum(size for _, size, _ in entries)
        for _, size, p in sorted(entries):
            if total <= self.max_bytes:
                break
            p.unlink(missing_ok=True)   # another process may have removed it first
            total -= size


def enable(choice: str | os.PathLike | None = None) -> Path | None:
    """Turn the persistent cache on (or off) for this process; returns its directory (None:
    off). Without `choice`, the first call decides and later calls keep it (the CLI and every
    `jaxsim.sweep/resume/analyze` call this); with one, the cache moves there (or stops)."""
    if choice is None and _state["configured"]:
        return _state["directory"]
    import jax
    directory = resolve(choice)
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    cache = None
    if directory is not None:
        limit = jax.config.jax_compilation_cache_max_size
        try:
            cache = AtomicFileCache(directory, MAX_BYTES if limit == -1 else limit)
        except OSError as e:   # e.g. a read-only home: work on, compiling every time
            LOG.warning(f"jaxsim: compilation cache {directory} cannot be used ({e.strerror}); "
                        f"compiling without it (set {ENV} to move it)")
            directory = None
    jax.config.update("jax_enable_compilation_cache", directory is not None)
    if directory is not None:
        jax.config.update("jax_compilation_cache_dir", str(directory))
    _install(cache)
    _state.update(directory=directory, configured=True)
    return directory


def _install(cache: AtomicFileCache | None) -> None:
    """Make `cache` the one JAX reads and writes (None: none), unless JAX's internals are not
    the ones this was written against (then JAX's own file cache serves the directory)."""
    try:
        from jax._src import compilation_cache as cc
        cc.reset_cache()      # forget a cache (or the "no cache" decision) of an earlier call
        if cache is not None:
            with cc._cache_initialized_mutex:
                cc._cache, cc._cache_initialized = cache, True
    except (ImportError, AttributeError):
        pass


def usage(directory: Path | None = None) -> tuple[int, int]:
    """(entries, bytes) in the cache directory (the active one by default)."""
    directory = directory or _state["directory"] or resolve()
    if directory is None or not Path(directory).is_dir():
        return 0, 0
    sizes = [p.stat().st_size for p in Path(directory).glob(f"*{SUFFIX}")]
    return len(sizes), sum(sizes)
