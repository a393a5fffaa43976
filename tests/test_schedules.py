"""Learning-rate schedules (`train.schedule` and its knobs): each kind's rate against its closed
form, the update a step applies follows it, a sweep over kinds and a knob compiles once and its
runs equal the same runs alone, and the default (constant) schedule trains bit-identically to
the warm-up-only loop it replaced."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_raw

from jaxsim import results, sweeps, testbeds, training
from jaxsim import config as cfglib
from jaxsim.config.schema import SCHEDULES
from jaxsim.results import plan
from jaxsim.sweeps import engine
from jaxsim.training import loop, sae_loop, schedules

STEPS = 60
PROBES = np.array([0, 3, 9, 10, 11, 25, 44, 45, 46, 59])


def closed_form(kind: str, n: np.ndarray, warmup: int, decay: int, floor: float) -> np.ndarray:
    """The multiplier of update number n = step + 1, written out independently of the code."""
    w = max(warmup, 1)
    warm = np.minimum(1.0, n / w)
    end = decay if decay > 0 else STEPS
    p = np.clip((n - warmup) / max(end - warmup, 1), 0.0, 1.0)
    after = {"constant": np.ones_like(p),
             "cosine": floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * p)),
             "linear": floor + (1 - floor) * (1 - p),
             "rsqrt": np.maximum(floor, np.sqrt(w / np.maximum(n, w)))}[kind]
    return warm * after


def _cfg(**train):
    return cfglib.from_dict(tiny_raw(train={"steps": STEPS, **train}))


@pytest.mark.parametrize("warmup,decay,floor", [(10, 45, 0.2), (0, 0, 0.0), (4, 0, 0.5)])
def test_each_schedule_matches_its_closed_form(warmup, decay, floor):
    """All four kinds in one vmapped call (the kind is a per-run index): lr(step) = lr x the
    closed form at steps inside and after the warm-up, across the decay and past its end."""
    cfgs = [_cfg(schedule=kind, warmup_steps=warmup, decay_steps=decay, min_lr_ratio=floor,
                 lr=2e-3) for kind in SCHEDULES]
    spec = cfglib.spec_of(cfgs[0])
    hp = jax.tree.map(lambda *v: jnp.stack(v),
                      *[training.as_arrays(cfglib.hparams_of(c)) for c in cfgs])
    assert hp["train"]["schedule"].tolist() == [0, 1, 2, 3]
    lr_KxS = jax.jit(jax.vmap(jax.vmap(training.learning_rate, (0, None, None)), (None, None, 0)),
                     static_argnums=1)(jnp.asarray(PROBES, jnp.int32), spec, hp)
    for kind, lr_S in zip(SCHEDULES, np.asarray(lr_KxS)):
        np.testing.assert_allclose(lr_S, 2e-3 * closed_form(kind, PROBES + 1.0, warmup, decay,
                                                             floor), rtol=1e-6, err_msg=kind)


def test_the_update_of_a_step_follows_the_schedule():
    """Plain SGD without clipping or decay: the parameters move by -lr(step) x the gradient."""
    for kind in ("cosine", "rsqrt"):
        cfg = _cfg(schedule=kind, warmup_steps=5, decay_steps=40, min_lr_ratio=0.1, lr=0.5,
                   optimizer="sgd", grad_clip=0.0, weight_decay=0.0)
        spec, hp = cfglib.spec_of(cfg), training.as_arrays(cfglib.hparams_of(cfg))
        key = jax.random.key(3)
        state = dict(jax.jit(training.init, static_argnums=1)(key, spec, hp),
                     step=jnp.asarray(22, jnp.int32))
        consts = testbeds.of(spec).constants(key, spec, hp)
        batch = testbeds.of(spec).train_batch(consts, key, state["step"], spec, hp)
        _, grads = jax.jit(loop.value_and_grad, static_argnums=1)(state["params"], spec, batch,
                                                                  hp)
        after, _ = jax.jit(loop.train_step, static_argnums=3)(state, consts, key, spec, hp)
        lr = 0.5 * closed_form(kind, np.array(23.0), 5, 40, 0.1)
        expected = jax.tree.map(lambda p, g: p - lr * g, state["params"], grads)
        for a, b in zip(jax.tree.leaves(after["params"]), jax.tree.leaves(expected)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=kind)


def test_a_sweep_over_kinds_and_a_knob_compiles_once_and_equals_runs_alone(tmp_path):
    """train.schedule (all four kinds) x train.decay_steps: 8 runs, one interval trace; the runs
    differ by schedule, and two of them trained alone give the same metrics. Chunks of 2 runs
    of two kinds each (decay_steps the outer axis): the program the runs alone use (a run alone
    is a chunk of 2 on 2 devices), so it is compiled once for the test."""
    train = {"steps": 24, "eval_every": 8, "warmup_steps": 4, "min_lr_ratio": 0.3, "lr": 1e-2}
    axes = {"train.decay_steps": [0, 12], "train.schedule": list(SCHEDULES)}
    programs = engine.Programs()
    out = sweeps.start(cfglib.from_dict(tiny_raw(train=train, sweep={"axes": axes,
                                                                     "chunk_size": 2})),
                       tmp_path / "all", progress=False, programs=programs)
    assert sum(n for (kind, _), n in programs.traces.items() if kind == "interval") == 1
    rows, swept = results.read_runs(out), results.read_metrics(out)
    assert {r["train.schedule"] for r in rows if int(r["chunk"]) == 0} == {"constant", "cosine"}
    run_of = {(r["train.schedule"], int(r["train.decay_steps"])): int(r["run_id"]) for r in rows}
    constant = swept["train_loss"][run_of["constant", 0]]
    for kind in ("cosine", "linear", "rsqrt"):
        assert not np.array_equal(swept["train_loss"][run_of[kind, 12]], constant), kind
    for kind, decay in (("cosine", 12), ("rsqrt", 0)):
        alone = results.read_metrics(sweeps.start(
            cfglib.from_dict(tiny_raw(train={**train, "schedule": kind, "decay_steps": decay})),
            tmp_path / f"{kind}{decay}", progress=False))
        for name, values in alone.items():
            if name == "step":   # the evaluation steps [E], shared by the runs
                continue
            np.testing.assert_allclose(swept[name][run_of[kind, decay]], values[0], rtol=1e-5,
                                       atol=1e-6, err_msg=f"{kind} {name}")


def _warmup_only(step, spec, hparams):
    """The update multiplier before schedules existed (loop.warmup_factor, verbatim)."""
    warmup = jnp.maximum(hparams["train"]["warmup_steps"], 1).astype(jnp.float32)
    return jnp.minimum(1.0, (step + 1).astype(jnp.float32) / warmup)


SAE = {"task": {"name": "concept_geometry", "geometry": "subspaces", "dim": 16,
                "num_concepts": 4, "max_concept_dim": 2},
       "model": {"name": "sae", "kind": "topk", "d_sae": 32, "k": 2},
       "train": {"steps": 20, "batch_size": 64, "lr": 3e-3, "eval_every": 10,
                 "eval_batch_size": 64}}


# the two training loops that apply schedules.factor (loop.train_step, sae_loop.train_step);
# the factor scales the optimizer's updates after the optimizer, the same code for AdamW and
# SGD (SGD under a schedule: test_the_update_of_a_step_follows_the_schedule)
@pytest.mark.parametrize("raw", [tiny_raw(), SAE], ids=["gpt", "sae"])
def test_the_default_schedule_trains_bit_identically_to_the_warmup_only_loop(raw, monkeypatch):
    """Schedule keys at their defaults (constant): two runs (warm-up 0 and 7) trained with the
    schedule code equal, bit for bit, the same runs with the old warm-up-only multiplier."""
    cfgs = [cfglib.from_dict({**raw, "train": {**raw["train"], "warmup_steps": w}})
            for w in (0, 7)]
    spec = cfglib.spec_of(cfgs[0])
    hp = jax.tree.map(lambda *v: jnp.stack(v),
                      *[training.as_arrays(cfglib.hparams_of(c)) for c in cfgs])
    keys = jnp.stack([jax.random.key(0), jax.random.key(1)])

    def run():   # a fresh function each time: a new trace, reading schedules.factor anew
        return jax.jit(jax.vmap(lambda k, h: training.train(k, spec, h)[1]))(keys, hp)

    new = run()
    monkeypatch.setattr(schedules, "factor", _warmup_only)
    old = run()
    for name in old:
        np.testing.assert_array_equal(new[name], old[name], err_msg=name)
    assert loop.schedules is schedules and sae_loop.schedules is schedules


def test_the_schedule_keys_are_per_run_and_checked():
    """schedule, decay_steps and min_lr_ratio are dynamic; the kind travels as its index; a
    wrong kind or ratio is one error naming the key."""
    assert {"train.schedule", "train.decay_steps", "train.min_lr_ratio"} <= set(
        cfglib.dynamic_keys(_cfg()))
    assert cfglib.hparams_of(_cfg(schedule="rsqrt"))["train"]["schedule"] == 3
    with pytest.raises(cfglib.ConfigError, match="train.schedule"):
        _cfg(schedule="cosin")
    with pytest.raises(cfglib.ConfigError, match="train.min_lr_ratio"):
        _cfg(min_lr_ratio=1.5)


def test_a_plan_written_before_schedules_reads_with_a_constant_schedule():
    """An older plan.json's runs lack the schedule keys: they read back at their defaults."""
    old = {"train": {"lr": 1e-3, "warmup_steps": 5}, "model": {"k": 2}}
    filled = plan._with_new_keys(old)
    assert filled["model"] == {"k": 2} and filled["train"]["lr"] == 1e-3
    assert filled["train"]["warmup_steps"] == 5
    assert (filled["train"]["schedule"], filled["train"]["decay_steps"]) == (0, 0)
