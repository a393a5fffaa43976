"""The persistent compilation cache (jaxsim.xla_cache): a second process with the same shapes
loads its programs, a new shape compiles, results are bit-identical with and without it, the
switches turn it off, and concurrent writers never leave a partial entry."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from jaxsim import results, xla_cache

from conftest import tiny_raw

ROOT = Path(__file__).resolve().parents[1]
# a process that runs the CLI and prints how many programs it loaded from the persistent cache
# and how many it wrote there (JAX's monitoring events)
COUNTING_CLI = """
import collections, json, sys
import jax
counts = collections.Counter()
jax.monitoring.register_event_listener(lambda event, **kw: counts.update([event]))
from jaxsim import cli
code = cli.main(sys.argv[1:])
print(json.dumps({"code": code, "hits": counts["/jax/compilation_cache/cache_hits"],
                  "writes": counts["/jax/compilation_cache/cache_misses"]}))
"""
# a process that compiles one small program of the given size through the same setup
ONE_PROGRAM = """
import collections, json, sys
import jax, jax.numpy as jnp
counts = collections.Counter()
jax.monitoring.register_event_listener(lambda event, **kw: counts.update([event]))
from jaxsim import api
api.setup_jax()
x = jnp.arange(int(sys.argv[1]), dtype=jnp.float32)
y = jax.jit(lambda v: jnp.cumsum(jnp.sin(v) ** 2) @ jnp.cos(v))(x)
print(json.dumps({"y": float(y), "hits": counts["/jax/compilation_cache/cache_hits"],
                  "writes": counts["/jax/compilation_cache/cache_misses"]}))
"""


def _env(cache) -> dict:
    env = dict(os.environ)   # conftest's XLA_FLAGS and min compile time 0 (every program kept)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    env[xla_cache.ENV] = str(cache)
    return env


def _run(script: str, args: list[str], cache) -> dict:
    done = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, env=_env(cache),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Error reading persistent compilation cache" not in done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _entries(cache: Path) -> set[str]:
    return {p.name for p in cache.glob(f"*{xla_cache.SUFFIX}")}


def test_second_process_loads_every_program_and_trains_the_same_bits(tmp_path):
    cache = tmp_path / "xla"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_raw(sweep={"axes": {"task.num_chains": [1, 4]},
                                                  "plot": False})))

    def sweep(out, *flags, cache=cache):
        return _run(COUNTING_CLI, ["sweep", str(cfg), "--out", str(tmp_path / out),
                                   "--no-progress", "-q", *flags], cache)

    first = sweep("a")
    assert first["code"] == 0 and first["hits"] == 0 and first["writes"] >= 2  # init, interval
    written = _entries(cache)
    assert len(written) == first["writes"]
    second = sweep("b")
    assert second["hits"] >= 2 and second["writes"] == 0   # nothing compiled anew
    assert _entries(cache) == written
    # the switch: --compile-cache off reads and writes nothing
    off = sweep("c", "--compile-cache", "off")
    assert off["hits"] == 0 and off["writes"] == 0 and _entries(cache) == written
    a, b, c = (results.read_metrics(tmp_path / d) for d in "abc")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])   # loaded == compiled here
        np.testing.assert_array_equal(a[name], c[name])   # with == without the cache


def test_a_changed_shape_compiles_anew_and_concurrent_writers_share_a_directory(tmp_path):
    cache = tmp_path / "xla"
    # two processes compile the same program into one directory at the same time
    procs = [subprocess.Popen([sys.executable, "-c", ONE_PROGRAM, "4096"], cwd=ROOT,
                              env=_env(cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
        assert "Error reading persistent compilation cache" not in err
    entries = _entries(cache)
    assert entries and not list(cache.glob("*.tmp"))   # whole entries only, no leftovers
    again = _run(ONE_PROGRAM, ["4096"], cache)
    assert again["hits"] >= 1 and again["writes"] == 0 and _entries(cache) == entries
    assert again["y"] == json.loads(outs[0][0].strip().splitlines()[-1])["y"]
    bigger = _run(ONE_PROGRAM, ["8192"], cache)
    assert bigger["writes"] >= 1 and len(_entries(cache)) > len(entries)
    off = _run(ONE_PROGRAM, ["8192"], "off")                # JAXSIM_CACHE_DIR=off
    assert off["hits"] == 0 and off["writes"] == 0 and off["y"] == bigger["y"]


def test_where_the_cache_goes(tmp_path, monkeypatch):
    import jax
    monkeypatch.delenv(xla_cache.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    jax_dir = jax.config.jax_compilation_cache_dir
    try:
        jax.config.update("jax_compilation_cache_dir", None)
        assert xla_cache.resolve() == tmp_path / "xdg" / "jaxsim" / "xla"
        jax.config.update("jax_compilation_cache_dir", str(tmp_path / "jax"))
        assert xla_cache.resolve() == tmp_path / "jax"      # one JAX was already given
    finally:
        jax.config.update("jax_compilation_cache_dir", jax_dir)
    monkeypatch.setenv(xla_cache.ENV, str(tmp_path / "env"))
    assert xla_cache.resolve() == tmp_path / "env"
    assert xla_cache.resolve(tmp_path / "flag") == tmp_path / "flag"
    for off in ["off", "", "none", "0", "OFF"]:
        monkeypatch.setenv(xla_cache.ENV, off)
        assert xla_cache.resolve() is None
    assert xla_cache.resolve("off") is None


def test_atomic_file_cache_writes_whole_entries_and_stays_bounded(tmp_path, monkeypatch):
    cache = xla_cache.AtomicFileCache(tmp_path, max_bytes=2500)
    seen_before_rename = []
    real_replace = os.replace

    def replace(src, dst):   # at the rename the entry's name does not exist yet
        seen_before_rename.append(Path(dst).exists())
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    assert cache.get("k1") is None
    cache.put("k1", b"a" * 1000)
    assert cache.get("k1") == b"a" * 1000 and seen_before_rename == [False]
    os.utime(tmp_path / f"k1{xla_cache.SUFFIX}", (1, 1))   # k1 the least recently used
    cache.put("k2", b"b" * 1000)
    cache.put("k3", b"c" * 1000)                            # 3000 > 2500: k1 goes
    assert cache.get("k1") is None and cache.get("k2") and cache.get("k3")
    assert xla_cache.usage(tmp_path) == (2, 2000)
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("value", ["off", "0"])
def test_compile_cache_off_in_this_process_stops_reads_and_writes(tmp_path, value):
    import jax
    from jax._src import compilation_cache as cc
    jax_dir = jax.config.jax_compilation_cache_dir
    try:
        assert xla_cache.enable(tmp_path / "x") == tmp_path / "x"
        assert isinstance(cc._cache, xla_cache.AtomicFileCache)
        assert xla_cache.enable(value) is None
        assert not jax.config.jax_enable_compilation_cache
        jax.jit(lambda v: v * 3.0 + 1.0)(np.arange(7, dtype=np.float32)).block_until_ready()
        assert _entries(tmp_path / "x") == set()
    finally:   # give the rest of the session its shared cache back
        jax.config.update("jax_enable_compilation_cache", True)
        jax.config.update("jax_compilation_cache_dir", jax_dir)
        cc.reset_cache()
        xla_cache._state.update(directory=None, configured=False)
