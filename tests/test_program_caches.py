"""Cached programs hold memory maps until dropped; `jaxsim.program_caches` lets them go."""
import jax
import jax.numpy as jnp
import pytest

from jaxsim import program_caches


def _maps() -> int:
    usage = program_caches.map_usage()
    if usage is None:
        pytest.skip("memory maps are counted from /proc (Linux only)")
    return usage[0]


def test_clearing_the_caches_gives_the_compiled_programs_memory_maps_back():
    @program_caches.program_cache(maxsize=None)
    def program(i: int):
        return jax.jit(lambda x: jnp.tanh(x @ x.T + i).sum())

    program_caches.clear()
    before = _maps()
    for i in range(40):
        program(i)(jnp.ones((3, 4 + i))).block_until_ready()
    grown = _maps() - before
    assert grown >= 40                   # every compiled program holds maps of its own
    assert program.cache_info().currsize == 40
    program_caches.clear()
    assert program.cache_info().currsize == 0
    assert _maps() - before < grown / 4  # ... and gives them back once no cache holds it


def test_relieve_clears_only_past_its_fraction_of_the_limit():
    @program_caches.program_cache()
    def program(i: int):
        return jax.jit(lambda x: x + i)

    program(1)(jnp.ones(2))
    _maps()
    assert not program_caches.relieve(1.0)
    assert program.cache_info().currsize == 1
    assert program_caches.relieve(0.0)
    assert program.cache_info().currsize == 0
