"""Pure single-run training: init / train_step / evaluate / train (lax.scan inside, no I/O)."""
from jaxsim.training.loop import (as_arrays, evaluate, init, metric_names, num_intervals, train,
                                  train_interval, train_step)

__all__ = ["as_arrays", "evaluate", "init", "metric_names", "num_intervals", "train", "train_interval",
           "train_step"]
