"""The sweep engine: one trace per shape group, sharding, chunking, run-in-sweep == alone,
divergence isolation, the results directory."""
import csv

import jax
import numpy as np
import pytest

from jaxsim import config, sweeps, training
from jaxsim import results
from jaxsim import grid
from jaxsim.sweeps import engine

from conftest import tiny_raw


def _cfg(**sections):
    return config.from_dict(tiny_raw(**sections))


def _sweep(tmp_path, name, **sections):
    out = sweeps.start(_cfg(**sections), tmp_path / name, progress=False)
    return results.read_runs(out), results.read_metrics(out)


def test_one_trace_per_shape_group(tmp_path):
    # a spec no other test compiles (eval_batch_size 13), so the jit cache starts cold
    cfg = _cfg(train={"eval_batch_size": 13},
               sweep={"axes": {"task.num_chains": [2, 3, 4, 5], "task.context_length": [8, 12],
                               "train.lr": [1e-3, 2e-3]}, "chunk_size": 2, "seeds": 1})
    runs = grid.expand(cfg)
    groups = grid.plan(cfg, runs, jax.device_count())
    assert len(runs) == 16 and len(groups) == 2 and all(len(g.chunks) == 4 for g in groups)
    programs = engine.Programs()
    sweeps.start(cfg, tmp_path / "s", progress=False, programs=programs)
    for g in groups:
        assert programs.traces["interval", g.spec] == 1
        assert programs.traces["init", g.spec] == 1
    # one interval and one init compile per group: the memory fit's compile is reused
    assert sorted(k[0] for k in programs.compile_seconds) == \
        ["init"] * len(groups) + ["interval"] * len(groups)


def test_results_directory_layout(tmp_path):
    # chunks of 2 runs: the program test_diverged_run_is_flagged_and_isolated compiles too
    rows, metrics = _sweep(tmp_path, "s", sweep={"axes": {"task.num_chains": [1, 4],
                                                         "train.lr": [1e-3, 3e-3]}, "seeds": 2,
                                                "chunk_size": 2})
    out = tmp_path / "s"
    assert {p.name for p in out.iterdir()} >= {"config.yaml", "runs.csv", "metrics.npz",
                                               "checkpoints", "summary.csv"}
    assert list(rows[0])[:8] == ["run_id", "seed", "task.num_chains", "train.lr", "status",
                                 "shape_group", "chunk", "index_in_chunk"]
    assert list(rows[0])[8:10] == ["final_step", "final_train_loss"]    # then every metric
    assert [int(r["run_id"]) for r in rows] == list(range(8))
    assert [(int(r["task.num_chains"]), float(r["train.lr"]), int(r["seed"])) for r in rows[:3]] == \
        [(1, 1e-3, 0), (1, 1e-3, 1), (1, 3e-3, 0)]
    assert all(r["status"] == "done" for r in rows)
    np.testing.assert_array_equal(metrics["step"], [10, 20])
    for name in ["train_loss", "eval_loss_id", "eval_loss_ood", "oracle_loss", "oracle_loss_id"]:
        assert metrics[name].shape == (8, 2) and np.isfinite(metrics[name]).all()
    # the saved config reproduces the sweep
    assert config.load(out / "config.yaml") == config.from_dict(tiny_raw(
        sweep={"axes": {"task.num_chains": [1, 4], "train.lr": [1e-3, 3e-3]}, "seeds": 2,
               "chunk_size": 2}))
    # readable without jaxsim
    with open(out / "runs.csv", newline="") as f:
        assert len(list(csv.reader(f))) == 9
    with np.load(out / "metrics.npz", allow_pickle=False) as data:
        assert "eval_loss_ood" in data.files


def test_run_in_sweep_equals_run_alone_chunked_and_sharded(tmp_path):
    axes = {"task.num_chains": [2, 16], "train.lr": [1e-3, 3e-3]}
    _, big = _sweep(tmp_path, "big", sweep={"axes": axes, "seeds": 2, "chunk_size": 2})
    # run (seed 1, N 16, lr 3e-3) is run_id 7 in the grid above
    _, alone = _sweep(tmp_path, "alone", task={"num_chains": 16}, train={"lr": 3e-3},
                      sweep={"seeds": 2})
    for name in ["train_loss", "eval_loss_id", "eval_loss_ood"]:
        np.testing.assert_allclose(big[name][7], alone[name][1], rtol=2e-5, atol=2e-5)
    # hyperparameter-only neighbours share init and data: identical oracle losses
    np.testing.assert_array_equal(big["oracle_loss_id"][5], big["oracle_loss_id"][7])


def test_sharded_equals_unsharded():
    assert jax.device_count() == 2
    cfg = _cfg(sweep={"axes": {"task.num_chains": [2, 3, 4, 5]}, "seeds": 1})
    runs = grid.expand(cfg)
    (group,) = grid.plan(cfg, runs, jax.device_count())
    chunk = group.chunks[0]
    seeds, hparams = engine.chunk_inputs(group.spec, chunk)
    programs = engine.Programs()
    state = programs.init_chunk(group.spec, seeds, hparams)
    assert len(jax.tree.leaves(state)[0].sharding.device_set) == 2
    state, sharded = programs.interval_chunk(group.spec, state, seeds, hparams)
    assert len(sharded["train_loss"].sharding.device_set) == 2
    one = jax.devices()[0]
    plain_seeds, plain_hp = jax.device_put((np.asarray(seeds), jax.device_get(hparams)), one)
    keys = jax.vmap(jax.random.key)(plain_seeds)
    # jitted as the engine's init is (op by op it takes ~3x the CPU time)
    s0 = jax.jit(jax.vmap(training.init, (0, None, 0)), static_argnums=1)(keys, group.spec,
                                                                          plain_hp)
    _, plain = jax.jit(jax.vmap(training.train_interval, (0, 0, None, 0)), static_argnums=2)(
        s0, keys, group.spec, plain_hp)
    for name in plain:
        np.testing.assert_allclose(sharded[name], plain[name], rtol=1e-5, atol=1e-6)


def test_diverged_run_is_flagged_and_isolated(tmp_path):
    rows, metrics = _sweep(tmp_path, "d", sweep={"axes": {"train.lr": [3e-3, 1e30]}, "seeds": 1})
    assert [r["status"] for r in rows] == ["done", "diverged"]
    assert not np.isfinite(metrics["train_loss"][1]).all()
    _, alone = _sweep(tmp_path, "a", train={"lr": 3e-3})
    np.testing.assert_allclose(metrics["train_loss"][0], alone["train_loss"][0], rtol=2e-5)


def test_refuses_non_empty_directory_and_keeps_its_files(tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(config.ConfigError, match="jaxsim resume"):
        sweeps.start(_cfg(), out, progress=False)
    assert [p.name for p in out.iterdir()] == ["precious.txt"]
    assert (out / "precious.txt").read_text() == "keep me"


def test_save_steps_are_log_spaced_and_kept(tmp_path):
    cfg = _cfg(train={"steps": 200, "eval_every": 10}, sweep={"checkpoint_every": 50})
    (group,) = grid.plan(cfg, grid.expand(cfg), 2)
    keep = grid.save_steps(cfg, group.spec)
    assert keep[0] == 10 and keep[-1] == 200 and len(keep) >= 10
    assert all(s % 10 == 0 for s in keep)
    gaps = np.diff(keep)
    assert gaps[-1] > gaps[0]  # log-spaced: denser early
    sweeps.start(cfg, tmp_path / "s", progress=False)
    ckpt = results.ChunkCheckpoints(results.chunk_dir(tmp_path / "s", group.index, 0), keep)
    assert ckpt.steps() == keep


def test_same_spec_in_chunks_of_different_sizes(tmp_path):
    """The compiled program is cached per (shape group, chunk size), never reused across sizes.
    (The tiny shapes: the 2-run chunk's program is the one the other sweeps here compile.)"""
    _, two = _sweep(tmp_path, "two", sweep={"seeds": 2})
    _, four = _sweep(tmp_path, "four", sweep={"seeds": 4})
    np.testing.assert_allclose(two["train_loss"], four["train_loss"][:2], rtol=2e-5, atol=2e-5)


def test_lax_map_inside_a_chunk_equals_one_vmap(tmp_path):
    """sweep.vmap_size: runs go through lax.map in groups, per device; same numbers. (4 runs
    of the tiny spec, N and seed per run: the one-vmap program is the 4-run chunk's of
    test_same_spec_in_chunks_of_different_sizes, compiled once for both.)"""
    axes = {"task.num_chains": [2, 4]}
    _, wide = _sweep(tmp_path, "wide", sweep={"axes": axes, "seeds": 2})
    _, narrow = _sweep(tmp_path, "narrow", sweep={"axes": axes, "seeds": 2, "vmap_size": 1})
    for name in ["train_loss", "eval_loss_id", "eval_loss_ood", "oracle_loss"]:
        np.testing.assert_allclose(narrow[name], wide[name], rtol=2e-5, atol=2e-5)
