"""sweep.memory_budget: chunks are split until XLA's compiled memory analysis fits the budget;
results do not depend on the split; a budget below one run per device is a clear error."""
import jax
import numpy as np
import pytest

from jaxsim import config, grid, results, sweeps
from jaxsim.config import ConfigError
from jaxsim.sweeps import engine, memory

from conftest import tiny_raw

AXES = {"train.lr": [1e-3, 2e-3, 3e-3, 4e-3]}


def _cfg(**sweep):
    return config.from_dict(tiny_raw(train={"eval_batch_size": 7},
                                     sweep={"axes": AXES, "seeds": 2, **sweep}))


def _whole_group_bytes(cfg) -> int:
    (group,) = grid.plan(cfg, grid.expand(cfg), jax.device_count())
    size, peak = memory.fit_chunk_size(engine.Programs(), group.spec, group.runs, 8,
                                       jax.device_count(), "none")
    assert size == 8
    return peak


def test_budget_parsing():
    assert memory.budget_bytes("none") is None
    assert memory.budget_bytes(0.5) == 2 ** 29
    assert memory.budget_bytes("25%") == int(0.25 * memory.device_memory())
    assert memory.budget_bytes("auto") == int(0.5 * memory.device_memory())
    for bad in ["lots", "0%", "150%", -1, 0]:
        with pytest.raises(ConfigError, match="sweep.memory_budget"):
            config.from_dict({"sweep": {"memory_budget": bad}})


def test_tight_budget_splits_chunks_and_gives_the_same_numbers(tmp_path):
    whole = _whole_group_bytes(_cfg())
    budget = 0.6 * whole / 2 ** 30          # the 8-run chunk does not fit, 4 runs do
    split = sweeps.start(_cfg(memory_budget=budget), tmp_path / "split", progress=False)
    one = sweeps.start(_cfg(memory_budget="none"), tmp_path / "one", progress=False)
    rows = results.read_runs(split)
    chunks = {int(r["chunk"]) for r in rows}
    assert len(chunks) >= 2 and all(int(r["index_in_chunk"]) < 4 for r in rows)
    assert {int(r["chunk"]) for r in results.read_runs(one)} == {0}
    a, b = results.read_metrics(split), results.read_metrics(one)
    for name in ["train_loss", "eval_loss_id", "eval_loss_ood"]:
        np.testing.assert_allclose(a[name], b[name], rtol=2e-5, atol=2e-5)
    # resume keeps the recorded chunks even if the budget in config.yaml would now differ
    text = (split / results.CONFIG).read_text().replace(f"memory_budget: {budget}",
                                                        "memory_budget: none")
    assert "memory_budget: none" in text
    (split / results.CONFIG).write_text(text)
    sweeps.resume(split, progress=False)
    assert [r["chunk"] for r in results.read_runs(split)] == [r["chunk"] for r in rows]


def test_budget_below_one_run_per_device_is_one_clear_error(tmp_path):
    out = tmp_path / "nothing"
    with pytest.raises(ConfigError, match=r"sweep.memory_budget .* shape group 0"):
        sweeps.start(_cfg(memory_budget=1e-7), out, progress=False)
    assert not out.exists()
