"""The command line end to end: sweep -> results dir -> figures; resume after SIGKILL; bad input."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from jaxsim import cli
from jaxsim import results

from conftest import XLA_TEST_FLAGS, tiny_raw

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path, raw, name="tiny.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def test_end_to_end_sweep_writes_results_and_figures(tmp_path):
    cfg = _write(tmp_path, tiny_raw(sweep={"axes": {"task.num_chains": [1, 8]}, "seeds": 2}))
    out = tmp_path / "out"
    assert cli.main(["sweep", str(cfg), "sweep.plot=true", "train.steps=30", "--out", str(out),
                     "--no-progress"]) == 0
    for name in ["config.yaml", "runs.csv", "metrics.npz"]:
        assert (out / name).is_file()
    assert results.read_metrics(out)["step"].tolist() == [10, 20, 30]
    for png in ["loss_curves.png", "ood_gap_heatmap.png"]:
        data = (out / "figures" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    (out / "figures" / "loss_curves.png").unlink()
    assert cli.main(["plot", str(out)]) == 0
    assert (out / "figures" / "loss_curves.png").stat().st_size > 5000


@pytest.mark.parametrize("args, needle", [
    (["train.lrr=1e-3"], "did you mean 'train.lr'"),
    (["model.d_model=15"], "must be divisible by model.num_heads"),
    (["sweep.axes.task.num_chains=[]"], "non-empty list"),
    (["task.num_states=1"], "task.num_states must be >= 2"),
    (["task.num_chains=0"], "task.num_chains must be >= 1"),
    (["train.lr=0"], "train.lr must be > 0.0"),
    (["train.steps=abc"], "train.steps must be an integer"),
    (["train.warmup_steps=3000000000"], "train.warmup_steps must fit an int32 (<= 2**31 - 1"),
    (["model.d_model=1000000000000"], "model.d_model must fit an int32"),
    (["model.d_model=100000"], "parameters per run (estimated); at most 2**31"),
    (["model.num_layers=100000"], "model.num_layers must be <= 1024"),
    (["sweep.seeds=2000000"], "the sweep has 2,000,000 runs"),
    (["train.steps=2000000", "train.eval_every=1"], "2,000,000 evaluations per run; at most"),
    (["sweep.axes.model.name=[gpt,encoder]"], "run one sweep per model"),
    (["train.steps=10", "train.steps=20"], "override train.steps is given twice"),
    (["trian.steps=10"], "no section 'trian' (did you mean 'train'?)"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, args, needle):
    cfg = _write(tmp_path, tiny_raw())
    out = tmp_path / "out"
    assert cli.main(["sweep", str(cfg), *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_bad_paths(tmp_path, capsys):
    assert cli.main(["sweep", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["resume", str(tmp_path)]) == 2
    assert "not a sweep directory" in capsys.readouterr().err
    assert cli.main(["plot", str(tmp_path)]) == 2
    assert "no metrics.npz" in capsys.readouterr().err


def _jaxsim(*args, **kw):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count=2 {XLA_TEST_FLAGS}")
    return subprocess.Popen([sys.executable, "-m", "jaxsim", *args, "--no-progress"], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)


def test_resume_after_sigkill_is_bit_identical(tmp_path):
    raw = tiny_raw(task={"context_length": 32}, train={"steps": 400, "batch_size": 64},
                   sweep={"axes": {"task.num_chains": [2, 8]}, "seeds": 1, "checkpoint_every": 20})
    cfg = _write(tmp_path, raw)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = _jaxsim("sweep", str(cfg), "--out", str(killed))
    chunk = killed / "checkpoints" / "group_000" / "chunk_000"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if chunk.is_dir() and any(p.name.startswith("step_") for p in chunk.iterdir()):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "metrics.npz").exists(), "the sweep finished before it could be killed"
    assert cli.main(["sweep", str(cfg), "--out", str(killed)]) == 2  # refuses, names resume
    assert _jaxsim("resume", str(killed)).wait() == 0
    assert _jaxsim("sweep", str(cfg), "--out", str(clean)).wait() == 0
    a, b = results.read_metrics(killed), results.read_metrics(clean)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert (killed / "runs.csv").read_text() == (clean / "runs.csv").read_text()


def test_relative_output_directory(tmp_path, monkeypatch):
    """The README's main job writes to the relative default results/<config name>."""
    _write(tmp_path, tiny_raw())
    monkeypatch.chdir(tmp_path)
    assert cli.main(["sweep", "tiny.yaml", "--no-progress"]) == 0
    assert (tmp_path / "results" / "tiny" / "metrics.npz").is_file()
    assert cli.main(["resume", "results/tiny", "--no-progress"]) == 0
    assert cli.main(["analyze", "results/tiny", "--sequences", "4"]) == 0


def test_cpu_devices_default_to_one_per_core():
    """`jaxsim` on a CPU host shards runs over one device per core (JAXSIM_CPU_DEVICES
    overrides; an XLA_FLAGS device count wins)."""
    import os
    import subprocess
    import sys
    code = "from jaxsim import cli; cli.use_every_core(); import jax; print(jax.device_count())"
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAXSIM_CPU_DEVICES")}
    run = lambda extra: subprocess.run([sys.executable, "-c", code], env={**env, **extra},
                                       capture_output=True, text=True, check=True).stdout.strip()
    assert run({}) == str(os.cpu_count())
    assert run({"JAXSIM_CPU_DEVICES": "3"}) == "3"
    assert run({"XLA_FLAGS": "--xla_force_host_platform_device_count=1",
                "JAXSIM_CPU_DEVICES": "3"}) == "1"


def test_a_bad_config_file_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / "quickstart.yaml").write_text("{}\n")
    assert cli.main(["sweep", str(tmp_path / "quickstrat.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"did you mean '{tmp_path / 'quickstart.yaml'}'" in err and len(err.splitlines()) == 1
    dup = tmp_path / "dup.yaml"
    dup.write_text("train:\n  steps: 10\n  steps: 20\n")
    out = tmp_path / "out"
    assert cli.main(["sweep", str(dup), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "key 'steps' appears twice in one mapping (lines 2 and 3)" in err
    assert len(err.splitlines()) == 1 and not out.exists()


def test_version_and_help(capsys):
    import jaxsim
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"jaxsim {jaxsim.__version__}" == "jaxsim 0.1.0"
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "phase-diagram sweep of small models" in text and "one compiled JAX program" in text
    assert "thin argument parsing" not in text
    for command in ("resume", "analyze", "plot"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "DIR a results directory written by `jaxsim sweep`" in text, command
        assert "four ICL" not in text
    with pytest.raises(SystemExit):
        cli.main(["analyze", "--help"])
    assert "the testbed's analysis" in " ".join(capsys.readouterr().out.split())


def test_license_is_apache_2():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("Copyright 2026 The jaxsim authors\n")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    import tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] in ("Apache-2.0", {"text": "Apache-2.0"})
