"""The Python API: jaxsim.open -> Sweep (frames, checkpoints, a callable model, the run's own
data), jaxsim.sweep / resume / analyze / plot, and `import jaxsim` staying cheap."""
import shutil
import subprocess
import sys

import jax
import numpy as np
import pandas as pd
import pytest
import yaml

import jaxsim
from jaxsim import config, results
from jaxsim.config import ConfigError

from conftest import tiny_raw

AXES = {"task.num_chains": [1, 4]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny markov_mixture sweep (N in {1, 4} x 2 seeds, 20 steps) trained once."""
    out = tmp_path_factory.mktemp("api") / "s"
    s = jaxsim.sweep(tiny_raw(sweep={"axes": AXES, "seeds": 2}), out=out, progress=False)
    assert isinstance(s, jaxsim.Sweep) and s.dir == out
    return out


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_runs_metrics_config(trained):
    s = jaxsim.open(trained)
    assert s.config == config.load(trained / "config.yaml") and s.analysis is None
    runs = s.runs
    assert list(runs.columns[:4]) == ["run_id", "seed", "task.num_chains", "status"]
    assert all(c.startswith("final_") for c in runs.columns[4:])       # final results
    assert runs.run_id.tolist() == [0, 1, 2, 3] and runs["task.num_chains"].tolist() == [1, 1, 4, 4]
    assert (runs.status == "done").all()
    m = s.metrics
    assert {"run_id", "step", "seed", "task.num_chains", "eval_loss_ood", "eval_loss_id",
            "train_loss"} <= set(m.columns)
    assert len(m) == 4 * 2 and m.step.tolist() == [10, 20] * 4
    raw = results.read_metrics(trained)
    np.testing.assert_array_equal(m.eval_loss_ood.to_numpy().reshape(4, 2), raw["eval_loss_ood"])
    assert m.groupby("task.num_chains").eval_loss_ood.mean().index.tolist() == [1, 4]
    assert "4 runs" in repr(s)


def test_model_reproduces_the_logged_eval_loss(trained):
    s = jaxsim.open(trained)
    m = s.metrics
    k = s.config.task.num_states
    for run_id in (0, 3):   # N = 1 runs in a group whose chain bank holds 4
        last = m[m.run_id == run_id].iloc[-1]
        for split in ("id", "ood"):
            batch = s.eval_batch(run_id, split)
            tokens = np.asarray(batch.tokens_BxL)
            assert tokens.shape == (16, 16)                 # eval_batch_size x context_length
            model = s.model(run_id)
            logits = np.asarray(model(jax.numpy.asarray(tokens[:, :-1])), np.float64)
            assert logits.shape == (16, 15, k) and model.step == 20
            np.testing.assert_array_equal(np.asarray(model(batch)), logits.astype(np.float32))
            log_p = _log_softmax(logits)
            ce = -np.take_along_axis(log_p, tokens[:, 1:, None], -1).mean()
            assert abs(ce - last[f"eval_loss_{split}"]) < 1e-4, (run_id, split)


def test_params_and_steps_agree_with_checkpoints(trained):
    s = jaxsim.open(trained)
    rows = {int(r["run_id"]): r for r in results.read_runs(trained)}
    for run_id in (0, 3):
        r = rows[run_id]
        chunk = results.chunk_dir(trained, int(r["shape_group"]), int(r["chunk"]))
        on_disk = sorted(int(p.name[len("step_"):]) for p in chunk.iterdir()
                         if p.name.startswith("step_"))
        assert s.steps(run_id) == on_disk == [10, 20]
        for step in (10, 20):
            saved = results.load_run(trained, run_id, step).params
            jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray,
                                                                     s.params(run_id, step)), saved)
        jax.tree.map(np.testing.assert_array_equal, s.params(run_id), s.params(run_id, 20))
    tokens = np.zeros((2, 15), np.int32)
    assert not np.array_equal(s.model(0, step=10)(tokens), s.model(0)(tokens))


def test_sample_is_fresh_data_of_the_run(trained):
    s = jaxsim.open(trained)
    b = s.sample(0, "id", 3, seed=1)
    assert b.tokens_BxL.shape == (3, 16) and b.next_probs_BxLxK.shape == (3, 16, 5)
    assert (np.asarray(b.chain_B) == 0).all()             # N = 1: the run's one chain
    np.testing.assert_array_equal(s.sample(0, "id", 3, seed=1).tokens_BxL, b.tokens_BxL)
    assert not np.array_equal(s.sample(0, "id", 3, seed=2).tokens_BxL, b.tokens_BxL)
    # the same single chain as the held-out batch: state x has the transition row T[x] in both
    held_out = s.eval_batch(0, "id")
    row_of = dict(zip(np.asarray(held_out.tokens_BxL).ravel().tolist(),
                      np.asarray(held_out.next_probs_BxLxK).reshape(-1, 5)))
    for x, row in zip(np.asarray(b.tokens_BxL).ravel().tolist(),
                      np.asarray(b.next_probs_BxLxK).reshape(-1, 5)):
        if x in row_of:
            np.testing.assert_array_equal(row, row_of[x])
    assert s.sample(2, "ood", 4).tokens_BxL.shape == (4, 16)


@pytest.mark.parametrize("call, needles", [
    (lambda s: s.params(99), ["run_id 99", "run ids: 0..3"]),
    (lambda s: s.model("a"), ["run_id 'a'", "0..3"]),
    (lambda s: s.steps(-1), ["run_id -1", "0..3"]),
    (lambda s: s.params(0, step=15), ["step 15", "saved: [10, 20]"]),
    (lambda s: s.model(1, step=5), ["step 5", "saved: [10, 20]"]),
    (lambda s: s.eval_batch(0, "test"), ["split 'test'", "splits: id, ood"]),
    (lambda s: s.sample(0, "train", 2), ["split 'train'", "splits: id, ood"]),
    (lambda s: s.sample(0, "id", 0), ["n must be an integer >= 1, got 0"]),
])
def test_bad_run_step_split_name_value_and_allowed(trained, call, needles):
    with pytest.raises(ConfigError) as err:
        call(jaxsim.open(trained))
    message = str(err.value)
    assert all(n in message for n in needles) and "\n" not in message, message


def test_open_and_sweep_refuse_bad_input(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        jaxsim.open(tmp_path / "missing")
    with pytest.raises(ConfigError, match="not a jaxsim results directory"):
        jaxsim.open(tmp_path)
    with pytest.raises(ConfigError, match="out=DIR"):
        jaxsim.sweep(tiny_raw())
    with pytest.raises(ConfigError, match="did you mean 'train.lr'"):
        jaxsim.sweep(tiny_raw(), ["train.lrr=1e-3"], out=tmp_path / "x")
    with pytest.raises(ConfigError, match="sequences must be an integer >= 1"):
        jaxsim.analyze(tmp_path, sequences=0)
    assert not (tmp_path / "x").exists()


def test_partial_sweep_metrics_come_from_its_checkpoints(trained, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(trained, partial)
    (partial / "metrics.npz").unlink()
    pd.testing.assert_frame_equal(jaxsim.open(partial).metrics, jaxsim.open(trained).metrics)


def test_sweep_from_a_path_then_resume_and_plot(tmp_path, monkeypatch):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny_raw()))
    monkeypatch.chdir(tmp_path)
    s = jaxsim.sweep("tiny.yaml", {"train.steps": 10, "train.lr": 1e-3}, progress=False)
    assert s.dir == tmp_path.joinpath("results", "tiny").relative_to(tmp_path)
    assert s.config.train.steps == 10 and s.config.train.lr == 1e-3
    assert s.metrics.step.tolist() == [10] and len(s.runs) == 1
    assert jaxsim.resume(s.dir, progress=False).metrics.equals(s.metrics)
    paths = jaxsim.plot(s.dir)
    assert paths and all(p.is_file() and p.stat().st_size > 0 for p in paths)


def test_analyze_returns_the_sweep_with_its_analysis(trained, tmp_path):
    copy = tmp_path / "s"
    shutil.copytree(trained, copy)
    s = jaxsim.analyze(copy, sequences=4, context_lengths=[8, 2, 8])
    assert [r["run_id"] for r in s.analysis["runs"]] == [0, 1, 2, 3]
    assert s.analysis["context_lengths"] == [2, 8]


def test_staged_sae_runs_read_their_own_source(trained, tmp_path):
    """SAEs on the activations of source runs 0 and 3 (a staged sweep: the source model rides in
    the run's dynamic inputs): `.model` on `.eval_batch` gives back each run's logged MSE."""
    raw = tiny_raw(task={"name": "activations", "site": "block0", "dim": 16},
                   model={"name": "sae", "kind": "topk", "d_sae": 32, "k": 2},
                   train={"steps": 20, "eval_every": 20, "batch_size": 64},
                   init={"source": str(trained)}, sweep={"axes": {"init.run": [0, 3]}})
    s = jaxsim.sweep(raw, out=tmp_path / "sae", progress=False)
    logged = s.metrics.set_index("run_id").mse_id
    points = []
    for run_id in (0, 1):
        batch = s.eval_batch(run_id, "id")
        codes, recon = s.model(run_id)(batch)
        assert codes.shape == (16, 32) and recon.shape == (16, 16)
        mse = float(((np.asarray(recon) - np.asarray(batch.x_BxD)) ** 2).sum(-1).mean())
        np.testing.assert_allclose(mse, logged[run_id], rtol=1e-4)
        points.append(np.asarray(batch.x_BxD))
        assert s.sample(run_id, "id", 8).x_BxD.shape == (8, 16)
    assert not np.allclose(points[0], points[1])          # each reads its own source model
    # the chain: each run's source row, and the source sweep itself
    assert s.source.dir == trained.absolute() and s.source.source is None
    assert list(s.runs.source_run) == [0, 3]
    assert (s.runs.source_step == s.source.steps(3)[-1]).all()
    assert jaxsim.open(trained).source is None


def test_import_jaxsim_does_not_import_jax():
    code = ("import sys, jaxsim; assert 'jax' not in sys.modules; "
            "assert callable(jaxsim.open) and jaxsim.Sweep.__name__ == 'Sweep'; "
            "assert 'jax' not in sys.modules; from jaxsim.cli import use_every_core; print('ok')")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "ok"
