"""Sweeps beyond one machine: --shard I/N, jaxsim merge, resume of a shard, Slurm via submitit's
local executor. Ground truth: the single-process sweep of the same config."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml

from jaxsim import cli, config, grid, results, sweeps
from jaxsim.config import ConfigError
from jaxsim.sweeps import merge, shards

from conftest import XLA_TEST_FLAGS, cut_and_resume, tiny_raw

try:  # imported at collection: submitit's logging.config.dictConfig closes the handlers that
    import submitit  # noqa: F401  pytest installs per test, if it first runs inside one
except ImportError:
    submitit = None

ROOT = Path(__file__).resolve().parents[1]
# 4 runs in 2 chunks of 2 (one shape group); its own eval_batch_size keeps its compile separate
RAW = tiny_raw(train={"eval_batch_size": 12},
               sweep={"axes": {"task.num_chains": [2, 8], "train.lr": [1e-3, 3e-3]},
                      "chunk_size": 2})


def _cfg(raw=RAW):
    return config.from_dict(raw)


def _digest(directory: Path) -> dict:
    """path -> sha256 of every file under `directory` (to prove it was not modified)."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _assert_same_sweep(merged: Path, single: Path):
    assert (merged / "runs.csv").read_text() == (single / "runs.csv").read_text()
    assert (merged / "summary.csv").read_text() == (single / "summary.csv").read_text()
    assert (merged / "config.yaml").read_text() == (single / "config.yaml").read_text()
    a, b = results.read_metrics(merged), results.read_metrics(single)
    assert list(a) == list(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])  # bit-identical: same chunks
    for row in results.read_runs(single):
        g, c = int(row["shape_group"]), int(row["chunk"])
        assert results.ChunkCheckpoints(results.chunk_dir(merged, g, c), []).steps() == \
            results.ChunkCheckpoints(results.chunk_dir(single, g, c), []).steps()
    step, state = results.restore_run(merged, 3)
    _, alone = results.restore_run(single, 3)
    jax.tree.map(np.testing.assert_array_equal, state, alone)


def _shard_sweeps(tmp_path, count=2, raw=RAW) -> list[Path]:
    dirs = [shards.shard_dir(tmp_path / "s", i, count) for i in range(count)]
    for i, d in enumerate(dirs):
        sweeps.start(_cfg(raw), d, progress=False, shard=shards.Shard(i, count))
    return dirs


def test_split_is_whole_chunks_in_contiguous_balanced_blocks():
    cfg = _cfg(tiny_raw(sweep={"axes": {"task.context_length": [8, 16], "task.num_chains":
                                        [1, 2, 3, 4, 5]}, "chunk_size": 2}))
    groups = grid.plan(cfg, grid.expand(cfg), 2)
    everything = [(g.index, c.index) for g in groups for c in g.chunks]
    assert len(everything) == 6  # 2 groups x 3 chunks (2, 2, 1 runs padded to 2)
    for count in range(1, 7):
        parts = [shards.select(groups, shards.Shard(i, count)) for i in range(count)]
        blocks = [[(g.index, c.index) for g in p for c in g.chunks] for p in parts]
        assert sum(blocks, []) == everything  # disjoint, complete, in plan order
        assert {len(b) for b in blocks} <= {6 // count, -(-6 // count)}
        run_ids = sorted(r.run_id for p in parts for g in p for r in g.runs)
        assert run_ids == list(range(10))
    with pytest.raises(ConfigError, match=r"only 6 chunk\(s\).*sweep.chunk_size"):
        shards.select(groups, shards.Shard(0, 7))
    for bad in ["2/2", "1", "a/b", "-1/2", "0/0"]:
        with pytest.raises(ConfigError, match="--shard must be I/N"):
            shards.parse(bad)


@pytest.fixture(scope="module")
def jit_cache(tmp_path_factory):
    """A persistent compilation cache shared by this module's subprocesses: the first one
    compiles the shape group, the others load it (as shards on a shared filesystem would)."""
    path = tmp_path_factory.mktemp("jit_cache")
    return {"XLA_FLAGS": f"--xla_force_host_platform_device_count=2 {XLA_TEST_FLAGS}",
            "PYTHONPATH": str(ROOT),
            "JAX_COMPILATION_CACHE_DIR": str(path), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


@pytest.fixture(scope="module")
def single(tmp_path_factory, jit_cache) -> Path:
    """The ground truth: the whole sweep in one process."""
    tmp = tmp_path_factory.mktemp("single")
    (tmp / "tiny.yaml").write_text(yaml.safe_dump(RAW))
    proc = _jaxsim(tmp, jit_cache, "sweep", "tiny.yaml", "--out", "single")
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()[-2000:]
    return tmp / "single"


def _jaxsim(cwd, env, *args):
    return subprocess.Popen([sys.executable, "-m", "jaxsim", *map(str, args), "--no-progress"],
                            cwd=cwd, env=dict(os.environ, **env), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def test_two_shard_processes_then_merge_equal_one_process(tmp_path, single, jit_cache):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(RAW))
    procs = [_jaxsim(tmp_path, jit_cache, "sweep", path, "--shard", f"{i}/2") for i in range(2)]
    for proc in procs:
        assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()[-2000:]
    holder = tmp_path / "results" / "tiny_shards"  # the default --out of a shard
    assert sorted(p.name for p in holder.iterdir()) == ["shard_000_of_002", "shard_001_of_002"]
    before = _digest(holder)
    assert cli.main(["merge", str(holder), "--out", str(tmp_path / "merged")]) == 0
    assert _digest(holder) == before  # shards only read
    _assert_same_sweep(tmp_path / "merged", single)
    assert cli.main(["plot", str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged" / "figures" / "loss_curves.png").stat().st_size > 5000


def test_merge_checks_and_never_touches_shards(tmp_path, capsys):
    dirs = _shard_sweeps(tmp_path)
    holder = dirs[0].parent
    before = _digest(holder)
    out = tmp_path / "m"

    def refused(paths, needle, target=out):
        with pytest.raises(ConfigError, match=needle):
            merge.merge(paths, target)
        assert not target.exists() or target == tmp_path / "busy"

    refused([dirs[0]], r"shard\(s\) 1/2 missing")
    refused([dirs[0], dirs[0]], "given twice")
    refused([tmp_path], "not a shard directory")
    other = tmp_path / "other" / "shard_001_of_002"
    shutil.copytree(dirs[1], other)
    text = (other / "config.yaml").read_text()
    (other / "config.yaml").write_text(text.replace("lr: 0.003", "lr: 0.002", 1))
    refused([dirs[0], other], f"'{other}' comes from another config.*lr: 0.003")
    (other / "config.yaml").write_text(text)
    (other / "metrics.npz").unlink()
    refused([dirs[0], other], f"'{other}' is not finished.*jaxsim resume")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    refused(dirs, "not empty", target=busy)
    assert _digest(busy) == {"keep.txt": hashlib.sha256(b"mine").hexdigest()}
    assert _digest(holder) == before
    # the CLI: one line, exit code 2; the default --out is the <out> of <out>_shards
    capsys.readouterr()
    assert cli.main(["merge", str(dirs[0])]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing" in err and len(err.splitlines()) == 1
    assert cli.main(["merge", *map(str, dirs)]) == 0
    assert _digest(holder) == before
    # the analysis reads runs.csv's shape_group / chunk / index_in_chunk of the merged dir
    assert cli.main(["analyze", str(tmp_path / "s"), "--sequences", "2",
                     "--context-lengths", "4,15"]) == 0
    assert len(json.loads((tmp_path / "s" / "analysis.json").read_text())["runs"]) == 4


def test_resume_a_shard(tmp_path):
    (done,) = _shard_sweeps(tmp_path, count=1)
    cut = tmp_path / "cut"
    cut_and_resume(done, cut, 20)   # as if killed after step 10
    (cut / "metrics.npz").unlink()       # unfinished again (a finished one has nothing to do)
    doc = shards.read_manifest(cut)
    shards.write_manifest(cut, dict(doc, plan_digest="0" * 64, device_count=8))
    with pytest.raises(ConfigError, match="planned for 8 device"):
        sweeps.resume(cut, progress=False)


def test_cli_flag_errors(tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(RAW))
    for args, needle in [(["--shard", "0/5"], "at most 2 shards"),
                         (["--shard", "3/2"], "--shard must be I/N"),
                         (["--shards", "2"], "go with --slurm"),
                         (["--slurm", "partition=x"], "needs --shards"),
                         (["--slurm", "cluster=mars", "--shards", "2"], "allowed slurm"),
                         (["--slurm", "nonsense", "--shards", "2"], "KEY=VALUE")]:
        assert cli.main(["sweep", str(path), "--out", str(tmp_path / "o"), *args]) == 2, args
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1, (args, err)
        assert not (tmp_path / "o").exists()


def test_slurm_array_on_submitit_local_executor(tmp_path, single, jit_cache, monkeypatch):
    if submitit is None:
        pytest.skip("submitit is not installed (pip install 'jaxsim[slurm]')")
    from jaxsim.sweeps import slurm
    for key, value in jit_cache.items():  # the local executor's jobs inherit os.environ
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match="slurm_bogus"):
        slurm.make_executor(tmp_path / "logs", {"cluster": "local", "bogus": 1})
    jobs = slurm.submit(_cfg(), tmp_path / "merged", 2, {"cluster": "local", "timeout_min": 5})
    assert len(jobs) == 3 and all(j.done() for j in jobs)  # result() raised on failure
    assert sorted(p.name for p in (tmp_path / "merged_shards").iterdir()) == \
        ["config.yaml", "shard_000_of_002", "shard_001_of_002", "submitit"]
    _assert_same_sweep(tmp_path / "merged", single)


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_multi_host_sweep_over_two_processes_equals_one_process(tmp_path, single):
    """jax.distributed over 2 local CPU processes of 1 device each (gloo collectives): one
    sweep, one mesh of 2 devices across the processes, same plan as `single` (2 devices)."""
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(RAW))
    address = f"127.0.0.1:{_free_port()}"
    env = {"XLA_FLAGS": f"--xla_force_host_platform_device_count=1 {XLA_TEST_FLAGS}",
           "PYTHONPATH": str(ROOT)}
    procs = [_jaxsim(tmp_path, env, "sweep", "tiny.yaml", "--out", "mh", "--distributed",
                     f"{address},2,{i}") for i in range(2)]
    for proc in procs:
        assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()[-2000:]
    _assert_same_sweep(tmp_path / "mh", single)
    assert cli.main(["sweep", "x.yaml", "--distributed", "nohost"]) == 2


def test_slurm_sbatch_scripts_under_mocked_slurm(tmp_path):
    """The real Slurm path without a cluster: submitit's own sbatch/sacct mock (no training)."""
    if submitit is None:
        pytest.skip("submitit is not installed (pip install 'jaxsim[slurm]')")
    try:
        from submitit.slurm.test_slurm import mocked_slurm
    except ImportError:
        pytest.skip("this submitit ships no Slurm mock")
    from jaxsim.sweeps import slurm
    with mocked_slurm():
        jobs = slurm.submit(_cfg(), tmp_path / "paper", 2,
                            slurm.parse_params("partition=gpu,time=90,gpus_per_node=1"))
    scripts = sorted((tmp_path / "paper_shards" / "submitit").glob("*_submission.sh"))
    texts = [p.read_text() for p in scripts]
    array = [t for t in texts if "--array=0-1" in t]
    merge_job = [t for t in texts if "--dependency" in t]
    assert len(jobs) == 3 and len(array) == 1 and len(merge_job) == 1, [p.name for p in scripts]
    for text in texts:
        assert "#SBATCH --partition=gpu" in text and "#SBATCH --time=90" in text
        assert "#SBATCH --gpus-per-node=1" in text
    array_id = str(jobs[0].job_id).split("_")[0]
    assert f"#SBATCH --dependency=afterok:{array_id}" in merge_job[0]
    assert (tmp_path / "paper_shards" / "config.yaml").read_text() == config.dump(_cfg())
