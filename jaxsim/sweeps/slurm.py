"""`jaxsim sweep CONFIG --shards N --slurm KEY=VALUE,...`: a job array of N shards through
submitit (optional extra `jaxsim[slurm]`), then a merge job that depends on them.

Layout: the resolved config goes to `<out>_shards/config.yaml` (overrides applied once, on the
submitting machine), array task I runs `jaxsim sweep <that> --shard I/N --out
<out>_shards/shard_I_of_N`, the merge job `jaxsim merge <out>_shards --out <out>`; submitit's
scripts and logs go to `<out>_shards/submitit/`.

KEY=VALUE pairs are submitit executor parameters, values parsed as YAML: the shared ones
(timeout_min, mem_gb, cpus_per_task, gpus_per_node, nodes, tasks_per_node, name) as they are,
any other as an sbatch option (partition=gpu, time=60, account=..., qos=..., gres=gpu:1 ->
submitit's slurm_partition, slurm_time, ...). `cluster=local` (or `debug`) runs the array on
this machine instead, through submitit's local executor, and waits for it: a dry run of the
cluster job before spending the queue on it.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from jaxsim import config as cfglib
from jaxsim.config import Config, ConfigError
from jaxsim.sweeps import shards

SHARED = ("timeout_min", "mem_gb", "cpus_per_task", "gpus_per_node", "nodes", "tasks_per_node",
          "name", "stderr_to_stdout")
CLUSTERS = ("slurm", "local", "debug")


def parse_params(text: str) -> dict:
    """'partition=gpu,time=60' -> {'partition': 'gpu', 'time': 60} (values parsed as YAML)."""
    params = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--slurm takes comma-separated KEY=VALUE pairs "
                              f"(partition=gpu,time=60), got {item!r}")
        params[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return params


def make_executor(folder: Path, params: dict):
    """A submitit AutoExecutor for `params['cluster']` (default slurm) with the other params."""
    try:
        import submitit
    except ImportError:
        raise ConfigError("--slurm needs submitit: pip install 'jaxsim[slurm]'") from None
    params = dict(params)
    cluster = params.pop("cluster", "slurm")
    if cluster not in CLUSTERS:
        raise ConfigError(f"--slurm cluster={cluster!r}: allowed {', '.join(CLUSTERS)}")
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    except RuntimeError as e:  # no srun on this machine
        raise ConfigError(f"--slurm: {e} (cluster=local runs the shards on this machine)"
                          ) from None
    named = {k if k in SHARED or k.startswith("slurm_") else f"slurm_{k}": v
             for k, v in params.items()}
    try:
        executor.update_parameters(**named)
    except (NameError, AssertionError, TypeError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"--slurm {', '.join(f'{k}={v}' for k, v in params.items())}: "
                          f"{first}") from None
    return executor


def run_cli(argv: list[str]) -> int:
    """What each job runs: the jaxsim CLI in a process of its own (so this module needs no
    import of the CLI that calls it), failing the job (and so its dependants) on error."""
    code = subprocess.run([sys.executable, "-m", "jaxsim", *argv]).returncode
    if code != 0:
        raise RuntimeError(f"jaxsim {' '.join(argv)} exited with {code}")
    return code


def submit(cfg: Config, out: Path, count: int, params: dict, merge: bool = True) -> list:
    """Submit the N shard jobs (an array) and the dependent merge job; returns the jobs.

    With cluster=local/debug, waits for the shards, then runs the merge job and waits for it.
    """
    out = Path(out).absolute()
    root = shards.shard_dir(out, 0, count).parent
    for path in (out, root):
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise ConfigError(f"'{path}' is not empty; choose another --out")
    if count < 1:
        raise ConfigError(f"--shards must be >= 1, got {count}")
    _check_enough_chunks(cfg, count)
    executor = make_executor(root / "submitit", params)
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(cfglib.dump(cfg))
    argvs = [["sweep", str(root / "config.yaml"), "--shard", f"{i}/{count}", "--out",
              str(shards.shard_dir(out, i, count)), "--no-progress"] for i in range(count)]
    jobs = executor.map_array(run_cli, argvs)
    if not merge:
        return jobs
    merge_argv = ["merge", str(root), "--out", str(out)]
    if executor.cluster == "slurm":
        array_id = str(jobs[0].job_id).split("_")[0]
        executor.update_parameters(slurm_dependency=f"afterok:{array_id}")
        return [*jobs, executor.submit(run_cli, merge_argv)]
    for job in jobs:
        job.result()
    merge_job = executor.submit(run_cli, merge_argv)
    merge_job.result()
    return [*jobs, merge_job]


def _check_enough_chunks(cfg: Config, count: int) -> None:
    """Fail before submitting when the plan (on this machine's device count) has < N chunks."""
    import jax

    from jaxsim import grid
    groups = grid.plan(cfg, grid.expand(cfg), jax.device_count())
    shards.select(groups, shards.Shard(count - 1, count), jax.device_count())
