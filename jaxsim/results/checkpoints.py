"""A chunk's checkpoints: checkpoints/group_G/chunk_C/step_XXXXXXXX, the stacked state and
metrics of the chunk's runs at a step (orbax), written async and whole, pruned to the steps kept
for analysis, a damaged step set aside (docs/sweeps.md says why this is not orbax's
CheckpointManager)."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxsim.results.files import CHECKPOINTS

STEP_DIR = re.compile(r"^step_(\d{8})$")
DAMAGED = ".damaged"   # suffix of a checkpoint step folder that could not be read


def chunk_dir(out: Path, group_index: int, chunk_index: int) -> Path:
    return Path(out) / CHECKPOINTS / f"group_{group_index:03d}" / f"chunk_{chunk_index:03d}"


class ChunkCheckpoints:
    """step_XXXXXXXX folders of one chunk: {'state': stacked state, 'metrics': {name: [C, E]}}.

    Orbax writes into a temporary folder and renames it when complete, so a folder matching
    STEP_DIR is always whole; a kill mid-write leaves only a temporary folder, removed here.
    """

    def __init__(self, directory: Path, keep_steps: list[int]):
        self.directory = Path(directory).absolute()  # orbax needs absolute paths
        self.keep = set(keep_steps)
        self.checkpointer = ocp.StandardCheckpointer()
        self._writing: int | None = None  # step of an async save not yet known to be complete

    def steps(self) -> list[int]:
        if not self.directory.exists():
            return []
        return sorted(int(m.group(1)) for p in self.directory.iterdir()
                      if (m := STEP_DIR.match(p.name)))

    def path(self, step: int) -> Path:
        return self.directory / f"step_{step:08d}"

    def clean_partial(self) -> None:
        """Remove what a killed save left (orbax's temporary folders); set-aside damaged steps
        (`set_aside`) stay."""
        if self.directory.exists() and jax.process_index() == 0:
            for p in self.directory.iterdir():
                if not STEP_DIR.match(p.name) and not p.name.endswith(DAMAGED):
                    shutil.rmtree(p, ignore_errors=True)

    def set_aside(self, step: int) -> Path:
        """Rename a step folder that cannot be read to step_XXXXXXXX.damaged (kept, never read
        again): resume then continues from the newest intact step."""
        target = self.path(step).with_name(self.path(step).name + DAMAGED)
        if jax.process_index() == 0:
            shutil.rmtree(target, ignore_errors=True)
            os.replace(self.path(step), target)
        return target

    def save(self, step: int, state, metrics: dict[str, np.ndarray]) -> None:
        """Start an async save: the arrays are copied to host now (so `state` may be donated to
        the next step), written in the background. Older steps not kept for analysis are removed
        once this save is known complete (at the next save or `wait`)."""
        self.wait()
        self.directory.mkdir(parents=True, exist_ok=True)
        metrics = {name: np.array(values) for name, values in metrics.items()}
        self.checkpointer.save(self.path(step), {"state": state, "metrics": metrics})
        self._writing = step

    def wait(self) -> None:
        """Block until the last save is on disk, then drop the steps it supersedes."""
        if self._writing is None:
            return
        self.checkpointer.wait_until_finished()
        step, self._writing = self._writing, None
        for old in self.steps() if jax.process_index() == 0 else []:
            if old < step and old not in self.keep:
                shutil.rmtree(self.path(old), ignore_errors=True)

    def restore(self, step: int, target):
        """The checkpoint at `step` laid out like `target`; target None = whole arrays on this
        process's first device, whatever topology saved them (another device count, or a
        multi-host sweep's processes)."""
        if target is None:
            device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            meta = self.checkpointer.metadata(self.path(step))  # StepMetadata or the tree
            meta = getattr(meta, "item_metadata", meta)
            target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype,
                                                                 sharding=device),
                                  getattr(meta, "tree", meta))
        return self.checkpointer.restore(self.path(step), target)
