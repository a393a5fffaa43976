"""Stages: sweeps whose runs start from the saved runs of another sweep (`init.source`)."""
import numpy as np
import pytest
import yaml
from conftest import cut_and_resume, tiny_raw

from jaxsim import cli, results, sweeps
from jaxsim import config as cfglib
from jaxsim.sweeps import engine, merge, shards


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A finished tiny source sweep: N in {2, 8} x 2 seeds (runs 0, 1: N=2; runs 2, 3: N=8)."""
    root = tmp_path_factory.mktemp("stages_src")
    path = root / "src.yaml"
    path.write_text(yaml.safe_dump(tiny_raw(train={"steps": 40, "eval_every": 20},
                                            sweep={"seeds": 2,
                                                   "axes": {"task.num_chains": [2, 8]}})))
    assert cli.main(["sweep", str(path), "--out", str(root / "src"), "--no-progress"]) == 0
    return root / "src"


def _staged(source, **sections) -> dict:
    """Run 0 (N=2) and run 2 (N=8) of the source, each fine-tuned with its own seed (0) and
    task, so each staged run evaluates on exactly its source run's held-out data."""
    return tiny_raw(train={"steps": 20, "eval_every": 20, **sections.pop("train", {})},
                    init={"source": str(source)},
                    sweep={"grids": [{"init.run": [0], "task.num_chains": [2]},
                                     {"init.run": [2], "task.num_chains": [8]}],
                           **sections.pop("sweep", {})}, **sections)


def _sweep(raw, out, programs=None):
    return sweeps.start(cfglib.from_dict(raw), out, progress=False, programs=programs)


def test_a_frozen_learning_rate_keeps_the_source_loss(source, tmp_path):
    """lr=1e-9, no weight decay: after 20 steps each staged run's held-out loss equals its
    source run's last logged one (same seed, same evaluation data); one compile covers both
    source runs; runs.csv records each run's source."""
    programs = engine.Programs()
    out = _sweep(_staged(source, train={"lr": 1e-9, "weight_decay": 0.0}), tmp_path / "ft",
                 programs)
    src, ft = results.read_metrics(source), results.read_metrics(out)
    for staged_run, source_run in ((0, 0), (1, 2)):
        for split in ("id", "ood"):
            name = f"eval_loss_{split}"
            assert abs(ft[name][staged_run, -1] - src[name][source_run, -1]) < 1e-3, name
    assert sum(n for (kind, _), n in programs.traces.items() if kind == "interval") == 1
    rows = results.read_runs(out)
    assert [(r["source_dir"], r["source_run"], r["source_step"]) for r in rows] == [
        (str(source.absolute()), "0", "40"), (str(source.absolute()), "2", "40")]
    step, state = results.restore_run(out, 1)
    _, before = results.restore_run(source, 2)
    np.testing.assert_allclose(state["params"]["embed"]["embedding"],
                               before["params"]["embed"]["embedding"], atol=1e-6)


def test_fine_tuning_moves_the_losses_and_resumes_bit_exactly(source, tmp_path):
    """With a normal learning rate the staged runs train on (their loss moves off the source's);
    a staged sweep cut after its first checkpoint resumes to the same bits."""
    raw = _staged(source, train={"steps": 40, "lr": 1e-2},
                  sweep={"checkpoint_every": 20, "save_steps": [20]})
    done = _sweep(raw, tmp_path / "done")
    src, ft = results.read_metrics(source), results.read_metrics(done)
    assert abs(ft["eval_loss_id"][0, -1] - src["eval_loss_id"][0, -1]) > 1e-3
    cut_and_resume(done, tmp_path / "cut", 40)   # as if killed after step 20


def test_staged_shards_merge_into_the_single_process_sweep(source, tmp_path):
    raw = _staged(source, sweep={"chunk_size": 2})
    raw["sweep"]["grids"] = [{"init.run": [0, 1, 2, 3]}]
    single = _sweep(raw, tmp_path / "single")
    cfg = cfglib.from_dict(raw)
    parts = [sweeps.start(cfg, tmp_path / f"shard_{i}", progress=False, shard=shards.Shard(i, 2))
             for i in range(2)]
    merged = merge.merge(parts, tmp_path / "merged")
    assert (merged / "runs.csv").read_text() == (single / "runs.csv").read_text()
    a, b = results.read_metrics(merged), results.read_metrics(single)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.parametrize("override, needle", [
    ("init.source={missing}", "does not exist"),
    ("init.run=7", "init.run=7 is not a run of init.source"),
    ("model.d_model=8", "model.d_model=8 (source: 16)"),
    ("task.context_length=8", "parameter ['pos_embed'] has shape"),
    ("init.step=30", "init.step=30 is not saved for run 0"),
])
def test_bad_sources_exit_2_with_one_line(source, tmp_path, capsys, override, needle):
    raw = _staged(source)
    raw["sweep"]["grids"] = []
    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    override = override.format(missing=tmp_path / "nowhere")
    assert cli.main(["sweep", str(path), override, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err
    assert not out.exists() or not any(out.iterdir())


def test_init_keys_need_a_source():
    with pytest.raises(cfglib.ConfigError, match="init.run=3 .* init.source, which is empty"):
        cfglib.from_dict(tiny_raw(init={"run": 3}))
    with pytest.raises(cfglib.ConfigError, match="init.source cannot be a sweep axis"):
        from jaxsim import stages
        stages.resolve(cfglib.from_dict(tiny_raw(init={"source": "x"},
                                                 sweep={"axes": {"init.source": ["a", "b"]}})))


def test_sae_on_activations_of_every_source_seed_in_one_compile(source, tmp_path):
    """The activations testbed (stage 'frozen') over init.run: one shape group, one compile; each
    SAE reads its own source model (their clean losses differ)."""
    raw = tiny_raw(task={"name": "activations", "site": "block0", "dim": 16},
                   model={"name": "sae", "kind": "topk", "d_sae": 32, "k": 2},
                   train={"steps": 20, "eval_every": 20, "batch_size": 64},
                   init={"source": str(source)},
                   sweep={"axes": {"init.run": [0, 3]}})
    programs = engine.Programs()
    out = _sweep(raw, tmp_path / "sae", programs)
    assert sum(n for (kind, _), n in programs.traces.items() if kind == "interval") == 1
    clean = results.read_metrics(out)["clean_loss_id"][:, -1]
    assert np.isfinite(clean).all() and clean[0] != clean[1]
    # the older task.source keys still load, as init.*
    old = tiny_raw(task={"name": "activations", "site": "block0", "dim": 16,
                         "source": str(source), "source_run": 3},
                   model={"name": "sae", "d_sae": 32, "k": 2})
    assert cfglib.from_dict(old).init == cfglib.InitConfig(str(source), 3, -1)


def _kl_to_source(logits, batch, source_logits):
    """Distillation: KL(source || model) per position, averaged (nats)."""
    import jax
    p = jax.nn.log_softmax(source_logits, -1)
    q = jax.nn.log_softmax(logits, -1)
    return (jax.numpy.exp(p) * (p - q)).sum(-1).mean()


def _distill(stage: str):
    import dataclasses
    from jaxsim import testbeds
    from jaxsim.testbed import Objective
    from jaxsim.training import objectives
    base = testbeds.get("markov_mixture")
    objective = Objective(objectives.lm_inputs, _kl_to_source,
                          lambda *a: {"kl": _kl_to_source(*a)}, ("kl",), uses_source=True)
    return dataclasses.replace(base, name=f"test_stages:{stage.upper()}", objective=objective,
                               stage=stage)


INIT, FROZEN = _distill("init"), _distill("frozen")


def test_the_objective_reads_the_frozen_source_model(source, tmp_path):
    """An objective with uses_source gets the source model's outputs: a run that starts from
    the source (stage init) is at KL 0 from it; a fresh model (stage frozen) distils toward
    it; without init.source the config is refused."""
    def raw(stage, lr):
        return tiny_raw(task={"name": f"test_stages:{stage}", "num_chains": 2},
                        train={"steps": 60, "eval_every": 20, "lr": lr, "weight_decay": 0.0},
                        init={"source": str(source)})
    at_source = results.read_metrics(_sweep(raw("INIT", 1e-9), tmp_path / "init"))
    assert np.abs(at_source["kl_id"]).max() < 1e-5 and np.abs(at_source["kl_ood"]).max() < 1e-5
    fresh = results.read_metrics(_sweep(raw("FROZEN", 1e-2), tmp_path / "frozen"))
    kl = fresh["kl_id"][0]
    assert kl[0] > 1e-4 and kl[-1] < 0.5 * kl[0], kl      # measured: 1.7e-3 -> 4.0e-4
    with pytest.raises(cfglib.ConfigError, match="trains against a source model"):
        cfglib.from_dict(tiny_raw(task={"name": "test_stages:INIT"}))
