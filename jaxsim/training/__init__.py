"""Pure single-run training: init / train_step / evaluate / train (lax.scan inside, no I/O).

`loop` trains the transformers (gpt, encoder) through their task's objective; `sae_loop` trains
sparse autoencoders. The functions below pick the right one from the spec, so the sweep engine
sees one contract.
"""
import jax

from jaxsim.config import Spec
from jaxsim.training import loop, sae_loop, schedules
from jaxsim.training.loop import as_arrays, fixed_inputs, num_intervals
from jaxsim.training.schedules import learning_rate


def _impl(spec: Spec):
    return sae_loop if spec.model.name == "sae" else loop


def init(key, spec: Spec, hparams: dict):
    return _impl(spec).init(key, spec, hparams)


def train_interval(state, key, spec: Spec, hparams: dict, fixed: dict | None = None):
    return _impl(spec).train_interval(state, key, spec, hparams, fixed)


def metric_names(spec: Spec) -> list[str]:
    return _impl(spec).metric_names(spec)


def train(key, spec: Spec, hparams: dict):
    """A whole run in one scan: metrics [E] per name, evaluated every `eval_every` steps."""
    def body(state, _):
        return train_interval(state, key, spec, hparams)

    return jax.lax.scan(body, init(key, spec, hparams), None, length=num_intervals(spec))


def train_step(state, consts, key, spec: Spec, hparams: dict):
    return _impl(spec).train_step(state, consts, key, spec, hparams)


__all__ = ["as_arrays", "fixed_inputs", "init", "learning_rate", "loop", "metric_names", "num_intervals",
           "sae_loop", "schedules", "train", "train_interval", "train_step"]
