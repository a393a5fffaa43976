"""SAE-latent steering: jaxsim's own SAEs, trained on the steered sweep's activations.

`steer.sae` names a results directory of a staged `activations` sweep whose `init.source` is the
steered sweep. Each of its SAE runs steers the source run it was trained on (runs.csv
`source_run`), at its site's block, when it read the same checkpoint that is steered (its
`source_step`): its latent with the largest mean code difference between the matching and the
non-matching fit activations, along that latent's decoder direction (`methods.sae_direction`).
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from jaxsim import config as cfglib
from jaxsim import results
from jaxsim.config import ConfigError
from jaxsim.steering import methods


class SAERun(NamedTuple):
    run_id: int          # the SAE run in steer.sae
    layer: int           # the block whose output it reads
    source_step: int     # the source checkpoint it was trained on


def index(sae_dir: Path, source: Path) -> dict:
    """{"dir": the SAE sweep, "runs": {source run id: its SAE runs}}."""
    sae_dir = Path(sae_dir).expanduser().absolute()
    if not (sae_dir / results.CONFIG).is_file() or not (sae_dir / results.RUNS).is_file():
        raise ConfigError(f"steer.sae '{sae_dir}' is not a jaxsim results directory")
    cfg = cfglib.load(sae_dir / results.CONFIG)
    if cfg.task.name != "activations" or not cfg.init.source:
        raise ConfigError(f"steer.sae '{sae_dir}' must hold SAEs trained on the steered "
                          f"sweep's activations (task.name=activations), not "
                          f"task.name={cfg.task.name}")
    if Path(cfg.init.source).absolute() != source:
        raise ConfigError(f"steer.sae '{sae_dir}' was trained on '{cfg.init.source}', not on "
                          f"the steered sweep '{source}'")
    out: dict[int, list[SAERun]] = {}
    for row in results.read_runs(sae_dir):
        site = row.get("task.site", cfg.task.site)
        if not site.startswith("block") or row.get("status", "done") != "done":
            continue                  # the embedding site is not steered; unfinished runs skip
        out.setdefault(int(row["source_run"]), []).append(
            SAERun(int(row["run_id"]), int(site[5:]), int(row["source_step"])))
    return {"dir": sae_dir, "runs": out}


def for_run(saes: dict, run_id: int, step: int) -> list[tuple[Path, SAERun]]:
    """The SAE runs that steer source run `run_id` at checkpoint `step`."""
    if not saes:
        return []
    return [(saes["dir"], s) for s in saes["runs"].get(run_id, []) if s.source_step == step]


def _decoder(sae_dir: Path, run_id: int) -> np.ndarray:
    """[F, C] each latent's decoder direction in the activations' own units."""
    from jaxsim.training import sae_loop
    _, state = results.restore_run(sae_dir, run_id)
    width = state["params"]["W_dec"].shape[0]
    return np.asarray(sae_loop.forward_decode(state, jnp.eye(width))
                      - sae_loop.forward_decode(state, jnp.zeros((1, width))))


def vectors(per_run: list, acts: methods.Activations, variants: int, width: int) -> tuple:
    """([R, V, C] unit interventions, [R, V] layers, per run [(SAE run, layer, latent)]),
    padded with zeros to `variants` per run."""
    from jaxsim.saved import Sweep
    resid = np.zeros((len(per_run), max(variants, 1), width), np.float32)
    layer = np.zeros((len(per_run), max(variants, 1)), np.int32)
    info, sweeps = [], {}             # one open Sweep per SAE results directory
    for r, saes in enumerate(per_run):
        valid = np.asarray(acts.valid_N[r])
        info.append([])
        for v, (sae_dir, sae) in enumerate(saes):
            if sae_dir not in sweeps:
                sweeps[sae_dir] = Sweep(sae_dir)
            model = sweeps[sae_dir].model(sae.run_id)
            pick = lambda a: np.asarray(a[r])[valid][:, :, sae.layer].reshape(-1, width)  # noqa: E731
            codes_match, _ = model(pick(acts.resid_match_NxKxSxC))
            codes_non, _ = model(pick(acts.resid_nonmatch_NxKxSxC))
            latent, vec = methods.sae_direction(codes_match, codes_non,
                                                _decoder(sae_dir, sae.run_id))
            resid[r, v], layer[r, v] = np.asarray(vec), sae.layer
            info[r].append((sae.run_id, sae.layer, int(latent)))
    return resid, layer, info
