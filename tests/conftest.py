"""Test settings: 2 forced CPU devices, rank promotion raises, float32, tiny shapes."""
import dataclasses
import os
import tempfile

# the tests compile many tiny programs: LLVM at -O0 (XLA's HLO passes unchanged) cuts a tiny
# sweep's compile by about a third (10.2 s -> 6.4 s on the 2-core CI-like machine); every
# subprocess a test starts gets the same flags, so results compared across processes agree
XLA_TEST_FLAGS = "--xla_backend_optimization_level=0"
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=2 {XLA_TEST_FLAGS}")
# one compilation cache for the session, shared by the xdist workers and the CLI subprocesses
# some tests start (they inherit the environment): a program compiled once is loaded elsewhere
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxsim-test-jax-cache-")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 2)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_enable_x64", False)

import pytest  # noqa: E402

from jaxsim import config  # noqa: E402

TINY = {
    "task": {"num_states": 5, "num_chains": 4, "context_length": 16},
    "model": {"num_layers": 1, "d_model": 16, "num_heads": 2, "d_mlp": 32},
    "train": {"steps": 20, "batch_size": 8, "eval_every": 10, "eval_batch_size": 16,
              "lr": 3e-3},
    "sweep": {"seeds": 1, "checkpoint_every": 10, "plot": False},
}


def tiny_raw(**sections) -> dict:
    """TINY with per-section updates, e.g. tiny_raw(train={"steps": 40})."""
    raw = {k: dict(v) for k, v in TINY.items()}
    name = sections.get("task", {}).get("name", "markov_mixture")
    if name != "markov_mixture":   # keep only the tiny task keys that testbed has
        from jaxsim import testbeds
        keys = {f.name for f in dataclasses.fields(testbeds.get(name).config)}
        raw["task"] = {k: v for k, v in raw["task"].items() if k in keys}
    for section, body in sections.items():
        raw[section] = {**raw.get(section, {}), **body}
    return raw


# modules whose tests share module-scoped fixtures that train sweeps: each runs on one xdist
# worker (pyproject: --dist loadgroup), so the fixture is built once, not once per worker
SHARED_FIXTURE_MODULES = {"test_api", "test_causal", "test_editing", "test_reliability",
                          "test_safety_analysis", "test_shard", "test_stages", "test_steering",
                          "test_summary"}


@pytest.hookimpl(tryfirst=True)   # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        if module in SHARED_FIXTURE_MODULES:
            item.add_marker(pytest.mark.xdist_group(module))


@pytest.fixture(autouse=True)
def _memory_maps():
    """A worker runs hundreds of tests and keeps every program they compiled, each holding
    memory maps: past the kernel's limit (vm.max_map_count) a compile dies natively. Drop the
    cached programs when a worker holds over a quarter of its maps (jaxsim.program_caches)."""
    yield
    from jaxsim import program_caches
    program_caches.relieve(0.25)


@pytest.fixture
def tiny_cfg():
    return config.from_dict(tiny_raw())


def cut_and_resume(done, cut, last_step: int) -> None:
    """Copy the finished sweep `done` to `cut` as if killed before saving `last_step` (that
    checkpoint and metrics.npz gone), resume it, and check it ends bit-identical to `done`."""
    import shutil

    import numpy as np

    from jaxsim import results, sweeps
    shutil.copytree(done, cut)
    for chunk in (cut / "checkpoints" / "group_000").iterdir():
        shutil.rmtree(chunk / f"step_{last_step:08d}")
    (cut / "metrics.npz").unlink()
    sweeps.resume(cut, progress=False)
    a, b = results.read_metrics(cut), results.read_metrics(done)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
