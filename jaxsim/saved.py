"""A saved results directory as a `Sweep` (what `jaxsim.open` returns): pandas frames of its
runs and metrics, its analysis, and each run's checkpoints as parameters, a callable model, its
exact held-out batches and fresh samples of its task. Read-only and lazy; importing this module
does not import JAX.
"""
from __future__ import annotations

import functools
import operator
import os
from pathlib import Path
from typing import Callable

from jaxsim import config as cfglib
from jaxsim.config import ConfigError
from jaxsim.program_caches import program_cache

PLACEMENT = ("shape_group", "chunk", "index_in_chunk")   # runs.csv columns of storage only


def _ranges(ids: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0..2, 5, 7..8'."""
    cuts = [i + 1 for i in range(len(ids) - 1) if ids[i + 1] != ids[i] + 1]
    spans = [ids[a:b] for a, b in zip([0, *cuts], [*cuts, len(ids)])]
    return ", ".join(f"{s[0]}..{s[-1]}" if len(s) > 1 else f"{s[0]}" for s in spans)


def _testbed(spec_or_cfg):
    from jaxsim import testbeds
    return testbeds.of(spec_or_cfg)


class Sweep:
    """A results directory (finished, partial or merged), read-only and lazy.

    config    the typed config (`jaxsim.config.load(DIR/config.yaml)`)
    runs      DataFrame, one row per run: run_id, seed, each swept key (dotted name), status,
              and once trained its final results (final_step, final_<metric>)
    metrics   tidy DataFrame, one row per run and evaluation step: run_id, seed, the swept keys,
              step, one column per metric (rows where a run has no evaluation dropped)
    summary   DataFrame, one row per combination of axis values: final results, mean and std
              over seeds (what summary.csv holds)
    analysis  the parsed analysis.json (`jaxsim analyze`), or None
    source    a staged sweep's source sweep (`init.source`), or None
    """

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        if not self.dir.is_dir():
            raise ConfigError(f"results directory '{self.dir}' does not exist")
        from jaxsim import results
        results.check_config(self.dir)
        for name in ("config.yaml", "runs.csv"):
            if not (self.dir / name).is_file():
                raise ConfigError(f"'{self.dir}' is not a jaxsim results directory (no {name})")
        from jaxsim.api import use_every_core   # api imports this module
        use_every_core()

    def __repr__(self) -> str:
        return f"Sweep('{self.dir}', {len(self._rows)} runs, task.name={self.config.task.name})"

    @functools.cached_property
    def config(self) -> cfglib.Config:
        return cfglib.load(self.dir / "config.yaml")

    @functools.cached_property
    def runs(self):
        """pandas.DataFrame [runs]: runs.csv without its checkpoint placement columns."""
        import pandas as pd
        self._rows     # runs.csv checked first: a damaged one is one line
        frame = pd.read_csv(self.dir / "runs.csv")
        return frame.drop(columns=[c for c in PLACEMENT if c in frame.columns])

    @functools.cached_property
    def metrics(self):
        """pandas.DataFrame [runs x evaluations]: run_id, seed, the swept keys, step, and one
        column per metric in the training loop's order (metrics.npz; for a sweep still
        training, its chunks' latest checkpoints)."""
        import numpy as np
        import pandas as pd
        from jaxsim import training
        ids_R, steps_E, arrays = self._metric_arrays()
        order = [n for g in self._groups for n in training.metric_names(g.spec)]
        order += list(_testbed(self.config).metric_aliases)
        names = sorted((n for n, a in arrays.items() if a.ndim == 2),
                       key=lambda n: order.index(n) if n in order else len(order))
        runs = self.runs.set_index("run_id").loc[ids_R]
        R, E = len(ids_R), len(steps_E)
        frame = pd.DataFrame({"run_id": np.repeat(ids_R, E),
                              **{k: np.repeat(runs[k].to_numpy(), E)
                                 for k in ["seed", *cfglib.axis_keys(self.config)]},
                              "step": np.tile(steps_E, R),
                              **{n: arrays[n].reshape(R * E) for n in names}})
        return frame.dropna(subset=names, how="all").reset_index(drop=True)

    def _metric_arrays(self) -> tuple:
        """(run ids [R], steps [E], {name: [R, E]}): metrics.npz, or for a sweep without one
        yet, each checkpointed chunk's latest checkpoint (NaN past it)."""
        import numpy as np
        from jaxsim import grid, results
        if (self.dir / results.METRICS).is_file():
            arrays = results.read_metrics(self.dir)
            return np.array(sorted(self._rows)), arrays.pop("step"), arrays
        per_chunk, kept = {}, []
        for g in self._groups:
            chunks = [c for c in g.chunks if c.runs[0].run_id in self._rows]
            for c in chunks:
                ckpt = results.ChunkCheckpoints(results.chunk_dir(self.dir, g.index, c.index), [])
                if ckpt.steps():
                    per_chunk[g.index, c.index] = ckpt.restore(ckpt.steps()[-1], None)["metrics"]
            kept.append(grid.Group(g.index, g.spec, chunks=[
                c for c in chunks if (g.index, c.index) in per_chunk]))
        steps, arrays = results.assemble([], kept, per_chunk)
        for alias, name in _testbed(self.config).metric_aliases.items():
            if name in arrays:
                arrays[alias] = arrays[name]
        return np.array(sorted(r.run_id for g in kept for c in g.chunks for r in c.runs)), \
            steps, arrays

    @functools.cached_property
    def summary(self):
        """pandas.DataFrame, one row per combination of the axes' values: its final results,
        mean and std over seeds (summary.csv's table; after `jaxsim analyze` with the
        testbed's analysis columns), computed from the files now (`jaxsim.summaries`)."""
        from jaxsim import results, summaries
        if not (self.dir / results.METRICS).is_file():
            raise ConfigError(f"'{self.dir}' has no {results.METRICS} yet (still training, or "
                              f"interrupted: `jaxsim resume {self.dir}`); its partial metrics "
                              f"are in .metrics")
        return summaries.of_directory(self.dir)

    @functools.cached_property
    def analysis(self) -> dict | None:
        from jaxsim import results
        return results.read_analysis(self.dir)

    @functools.cached_property
    def source(self) -> Sweep | None:
        """A staged sweep's source (`init.source`) as a Sweep, None for a sweep trained from
        scratch: `s.source.params(row.source_run, row.source_step)` is what run `row` of
        `s.runs` started from; `s.source.source` goes one stage further back."""
        source = self.config.init.source
        if not source:
            return None
        if not (Path(source) / "config.yaml").is_file():
            raise ConfigError(f"the source of {self.dir}, init.source '{source}', is no longer "
                              f"a results directory")
        return Sweep(source)

    # ---- one run ---------------------------------------------------------------------------
    @functools.cached_property
    def _rows(self) -> dict[int, dict]:
        from jaxsim import results
        return {int(r["run_id"]): r for r in results.read_runs(self.dir)}

    @functools.cached_property
    def _groups(self) -> list:
        """The plan's shape groups (`grid.Group`) holding runs of this directory."""
        from jaxsim import results
        _, groups = results.read_plan(self.dir)
        return [g for g in groups if any(r.run_id in self._rows for r in g.runs)]

    def _check_run(self, run_id: int) -> int:
        try:
            index = operator.index(run_id)
        except TypeError:
            index = None
        if index not in self._rows:
            raise ConfigError(f"run_id {run_id!r} is not a run of {self.dir}; run ids: "
                              f"{_ranges(sorted(self._rows))}")
        return index

    def _run_inputs(self, run_id: int) -> tuple:
        """(spec, hparams, key): what the sweep trained and evaluated run `run_id` with — its
        shape group's merged Spec, its dynamic inputs as the engine builds them
        (`stages.inputs`: its hyperparameters and, in a staged sweep, its frozen source run
        under "source"), jax.random.key(seed)."""
        import jax
        from jaxsim import stages
        run_id = self._check_run(run_id)
        run, group = next((r, g) for g in self._groups for r in g.runs if r.run_id == run_id)
        hparams = jax.tree.map(lambda a: jax.numpy.asarray(a[0]), stages.inputs(group.spec, [run]))
        return group.spec, hparams, jax.random.key(run.seed)

    def _testbed_of_split(self, spec, split: str):
        testbed = _testbed(spec)
        if split not in testbed.splits:
            raise ConfigError(f"split {split!r} is not a split of task.name={testbed.name}; "
                              f"splits: {', '.join(testbed.splits)}")
        return testbed

    def steps(self, run_id: int) -> list[int]:
        """The run's saved checkpoint steps (its chunk's), ascending."""
        from jaxsim import results
        return results.saved_steps(self.dir, self._check_run(run_id))

    def params(self, run_id: int, step: int | None = None) -> dict:
        """The run's parameter pytree at a saved `step` (None = the last saved)."""
        from jaxsim import results
        return results.restore_run(self.dir, self._check_run(run_id), step)[1]["params"]

    def model(self, run_id: int, step: int | None = None) -> Callable:
        """The run's model at a saved `step` (None = the last) as a jitted function of the
        model's inputs (a gpt: tokens_BxT int -> logits_BxTxV; an SAE: x_BxD -> (codes_BxF,
        reconstruction_BxD)) or of a whole testbed Batch (its objective picks the inputs).
        Its `.step` is the checkpoint step it holds."""
        from jaxsim import results
        spec, hparams, _ = self._run_inputs(run_id)
        saved, state = results.restore_run(self.dir, self._check_run(run_id), step)
        if spec.model.name == "sae":
            bound = ({k: v for k, v in state.items() if k != "opt_state"}, hparams)
            select = lambda batch: (batch.x_BxD,)    # noqa: E731
        else:
            bound, select = (state["params"],), _testbed(spec).objective.inputs
        program = _model_program(spec)

        def apply(*inputs):
            if len(inputs) == 1 and hasattr(inputs[0], "_fields"):   # a testbed's Batch
                inputs = select(inputs[0])
            return program(*bound, *inputs)

        apply.step = saved
        return apply

    def eval_batch(self, run_id: int, split: str):
        """Exactly the held-out Batch the sweep evaluated the run on for `split`."""
        spec, hparams, key = self._run_inputs(run_id)
        self._testbed_of_split(spec, split)
        return _data_program(spec, split, None)(key, key, hparams)

    def sample(self, run_id: int, split: str, n: int, seed: int = 0):
        """A fresh Batch of `n` examples of `split` from the run's own task (its constants:
        chains, factors, graph, ...; an SAE's: points), drawn with jax.random.key(seed)."""
        spec, hparams, key = self._run_inputs(run_id)
        testbed = self._testbed_of_split(spec, split)
        if testbed.sample is None and testbed.sae is None:
            raise ConfigError(f"task.name={testbed.name} has no sampler (Testbed.sample); "
                              f"use .eval_batch(run_id, split)")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"n must be an integer >= 1, got {n!r}")
        import jax
        return _data_program(spec, split, n)(key, jax.random.key(seed), hparams)


@program_cache()
def _model_program(spec):
    import jax
    from jaxsim import xla_cache
    from jaxsim.training import loop, sae_loop
    xla_cache.enable()   # its compile is loaded from the persistent cache when there
    if spec.model.name == "sae":
        return jax.jit(lambda state, hparams, x: sae_loop.forward(state, x, spec, hparams))
    model = loop.model_of(spec)
    return jax.jit(lambda params, *inputs: model.apply({"params": params}, *inputs))


@program_cache()
def _data_program(spec, split: str, n: int | None):
    """jit of (run key, sample key, hparams) -> the run's held-out batch of `split` (n None)
    or n fresh examples drawn with the sample key, from the run's own task constants."""
    import jax
    from jaxsim import xla_cache
    xla_cache.enable()
    testbed = _testbed(spec)

    def batch(key, sample_key, hparams):
        consts = testbed.constants(key, spec, hparams)
        if n is None:
            return testbed.eval_batch(consts, key, spec, hparams, split)
        if testbed.sample is None:   # an SAE's points (its testbeds have one split)
            return testbed.sae.sample(sample_key, consts, spec, hparams, n)
        return testbed.sample(sample_key, consts, spec, hparams, n, split)

    return jax.jit(batch)
