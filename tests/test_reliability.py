"""Faults end in one clear line with nothing lost: concurrent writers, unwritable or odd output
paths, a finished sweep resumed, a directory that does not exist."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import XLA_TEST_FLAGS, tiny_raw

from jaxsim import cli, results

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A finished tiny sweep (checkpoints at steps 10 and 20)."""
    root = tmp_path_factory.mktemp("reliability")
    (root / "tiny.yaml").write_text(yaml.safe_dump(tiny_raw(sweep={"save_steps": [10]})))
    assert cli.main(["sweep", str(root / "tiny.yaml"), "--out", str(root / "done"),
                     "--no-progress"]) == 0
    return root / "done"


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("jaxsim: error:"), err
    return err


def test_a_second_writer_exits_2_naming_the_holder(done, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(done, copy)
    before = (copy / "metrics.npz").read_bytes()
    with results.writer_lock(copy, "test"):
        for command in (["resume", str(copy)], ["analyze", str(copy), "--sequences", "2"]):
            assert cli.main(command) == 2
            err = _one_line(capsys)
            assert f"in use by another jaxsim process (pid {os.getpid()}, jaxsim test)" in err
    assert (copy / "metrics.npz").read_bytes() == before
    assert cli.main(["resume", str(copy), "--no-progress"]) == 0   # released


def _same_metrics(a_dir: Path, b_dir: Path) -> None:
    a, b = results.read_metrics(a_dir), results.read_metrics(b_dir)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def _cut(done: Path, into: Path) -> Path:
    shutil.copytree(done, into)
    shutil.rmtree(into / "checkpoints" / "group_000" / "chunk_000" / "step_00000020")
    (into / "metrics.npz").unlink()
    return into


def test_two_concurrent_resumes_one_trains_one_exits_2(done, tmp_path):
    cut = _cut(done, tmp_path / "cut")
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count=2 {XLA_TEST_FLAGS}")
    procs = [subprocess.Popen([sys.executable, "-m", "jaxsim", "resume", str(cut),
                               "--no-progress"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = sorted((p.wait(timeout=600), p.stderr.read()) for p in procs)
    assert [code for code, _ in outcomes] == [0, 2], outcomes
    assert "in use by another jaxsim process (pid" in outcomes[1][1]
    _same_metrics(cut, done)


def test_bad_output_paths_are_one_line_before_any_work(done, tmp_path, capsys):
    config = done / "config.yaml"
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for out, needle in ((a_file / "out", "lies under a file"), (a_file, "is not empty"),
                        (done, "is not empty")):
        assert cli.main(["sweep", str(config), "--out", str(out), "--no-progress"]) == 2
        assert needle in _one_line(capsys)
    assert a_file.read_text() == "x"


def test_a_failed_start_leaves_no_directory(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny_raw(
        model={"d_model": 8}, init={"source": str(tmp_path / "src")})))
    out = tmp_path / "new" / "out"
    assert cli.main(["sweep", str(tmp_path / "tiny.yaml"), "--out", str(out)]) == 2
    assert "not a jaxsim results directory" in _one_line(capsys)
    assert not out.exists()


def test_resume_of_a_finished_sweep_changes_nothing(done, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(done, copy)
    def stamps():   # every file but the writer lock's
        return {p: p.stat().st_mtime_ns for p in copy.rglob("*")
                if p.is_file() and p.name != results.LOCK}

    before = stamps()
    assert cli.main(["resume", str(copy), "--no-progress"]) == 0
    assert "nothing to resume" in capsys.readouterr().err
    assert stamps() == before


def test_missing_directories_are_named(tmp_path, capsys):
    for command in ("resume", "plot", "analyze"):
        assert cli.main([command, str(tmp_path / "nowhere")]) == 2
        err = _one_line(capsys)
        assert "nowhere" in err and ("does not exist" in err or "not a sweep directory" in err)


# in a subprocess: run each argv through cli.main, print [(exit code, stderr)] as JSON
_CLI_DRIVER = """
import contextlib, io, json, sys
from jaxsim import cli
answers = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        answers.append((cli.main(argv), err.getvalue()))
print(json.dumps(answers))
"""


def _cli_unprivileged(commands: list[list[str]]) -> list[tuple[int, str]]:
    """Each command's (exit code, stderr) from one process that cannot write where permissions
    forbid. As root, util-linux's setpriv drops the capabilities that let root write anyway
    (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER) from the bounding set of the process
    it starts: a 0o555 directory is then read-only to it as to a user, while root still owns
    (and reads) the venv and the repository."""
    import json
    command = [sys.executable, "-c", _CLI_DRIVER, json.dumps(commands)]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv (util-linux) to drop root's powers")
        command = [setpriv, "--bounding-set", "-dac_override,-dac_read_search,-fowner", *command]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [tuple(answer) for answer in json.loads(proc.stdout)]


def test_read_only_directories_are_refused_before_the_work(done, tmp_path):
    """Runs as a user or as root (without root's power to write anywhere): a read-only results
    directory for analyze, plot and resume; --out in a read-only parent or a read-only empty
    directory for sweep. Each is one line, and nothing is written."""
    copy = tmp_path / "copy"
    shutil.copytree(done, copy)
    (tmp_path / "locked").mkdir()
    (tmp_path / "empty").mkdir()
    before = sorted(p.relative_to(copy) for p in copy.rglob("*"))
    config = str(done / "config.yaml")
    commands = [["analyze", str(copy)], ["plot", str(copy)], ["resume", str(copy)],
                ["sweep", config, "--out", str(tmp_path / "locked" / "out"), "--no-progress"],
                ["sweep", config, "--out", str(tmp_path / "empty"), "--no-progress"]]
    for path in (copy, tmp_path / "locked", tmp_path / "empty"):
        path.chmod(0o555)
    try:
        answers = _cli_unprivileged(commands)
    finally:
        for path in (copy, tmp_path / "locked", tmp_path / "empty"):
            path.chmod(0o755)
    for command, (code, err) in zip(commands, answers):
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("jaxsim: error:"), \
            (command, err)
        assert "cannot write into" in err or "cannot create --out" in err, (command, err)
        assert "Permission denied" in err, (command, err)
    assert sorted(p.relative_to(copy) for p in copy.rglob("*")) == before
    assert not (tmp_path / "locked" / "out").exists() and not any((tmp_path / "empty").iterdir())


def test_a_damaged_latest_checkpoint_is_set_aside_and_retrained(done, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(done, copy)
    step = copy / "checkpoints" / "group_000" / "chunk_000" / "step_00000020"
    for path in step.rglob("*"):
        if path.is_file():
            path.write_bytes(b"\\x00garbage" * 7)
    (copy / "metrics.npz").unlink()
    assert cli.main(["resume", str(copy), "--no-progress"]) == 0
    assert "cannot be read" in capsys.readouterr().err
    assert step.with_name("step_00000020.damaged").is_dir()      # kept, never read again
    _same_metrics(copy, done)
    assert (copy / "runs.csv").read_text() == (done / "runs.csv").read_text()


def test_a_saved_config_the_rules_now_refuse_is_named_not_called_damaged(done, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(done, copy)
    raw = yaml.safe_load((copy / "config.yaml").read_text())
    raw["train"]["lr"] = -1.0
    (copy / "config.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(results.cfglib.ConfigError) as e:
        results.read_runs(copy)
    assert "config.yaml does not validate" in str(e.value) and "train.lr" in str(e.value)
    assert "runs.csv is damaged" not in str(e.value)


def test_damaged_result_files_are_named_then_rebuilt(done, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(done, copy)
    runs_csv = (copy / "runs.csv").read_bytes()
    (copy / "runs.csv").write_bytes(runs_csv[: len(runs_csv) // 2 + 5])
    metrics = (copy / "metrics.npz").read_bytes()
    (copy / "metrics.npz").write_bytes(metrics[: len(metrics) // 2])
    assert cli.main(["analyze", str(copy), "--sequences", "2"]) == 2
    assert "runs.csv is damaged" in _one_line(capsys)
    assert cli.main(["plot", str(copy)]) == 2
    assert "is damaged" in _one_line(capsys)
    assert cli.main(["resume", str(copy), "--no-progress"]) == 0
    assert (copy / "runs.csv").read_text() == (done / "runs.csv").read_text()
    _same_metrics(copy, done)
    (copy / "runs.csv").write_text("")
    assert cli.main(["resume", str(copy), "--no-progress"]) == 0
    assert (copy / "runs.csv").read_text() == (done / "runs.csv").read_text()


def test_resume_on_another_device_count_names_the_one_to_use(done, tmp_path):
    cut = _cut(done, tmp_path / "cut")
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count=3 {XLA_TEST_FLAGS}")
    proc = subprocess.run([sys.executable, "-m", "jaxsim", "resume", str(cut), "--no-progress"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "resume it with 2 device(s)" in err, err


def test_a_diverged_run_is_marked_in_the_log_the_analysis_and_the_figures(tmp_path, capsys):
    """lr 1e30 diverges: the evaluation log line counts it; analysis.json marks it (status and
    every dominant cell "diverged", never an algorithm picked by argmin over NaN); plot draws."""
    from jaxsim.testbeds.markov_mixture import icl
    assert icl.dominant(np.array([[np.nan, 1.0, 2.0, 3.0], [3.0, 1.0, 2.0, 0.5]])).tolist() == \
        [-1, 3]
    grids = [{"task.num_chains": [1], "train.lr": [3e-3]},     # N = 4: every run diverges
             {"task.num_chains": [4], "train.lr": [1e30]}]
    # the tiny shapes: the N = 4 group's programs are the `done` sweep's
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(tiny_raw(
        sweep={"grids": grids, "plot": True})))
    out = tmp_path / "d"
    assert cli.main(["sweep", str(tmp_path / "d.yaml"), "--out", str(out), "--no-progress"]) == 0
    assert "(1 of 2 runs diverged: not in the means)" in capsys.readouterr().err
    assert cli.main(["analyze", str(out), "--sequences", "4"]) == 0
    import json
    fine, diverged = json.loads((out / "analysis.json").read_text())["runs"]
    assert (fine["status"], diverged["status"]) == ("done", "diverged")
    assert set(np.ravel(diverged["ood"]["dominant"])) == {"diverged"}
    assert set(np.ravel(fine["ood"]["dominant"])) <= set(icl.NAMES)
    assert cli.main(["plot", str(out)]) == 0
    assert (out / "figures" / "phase_diagram.png").stat().st_size > 5000


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(tiny_raw(
        sweep={"axes": {"task.num_chains": [2, 4], "model.d_model": [8, 16]}})))
    out = tmp_path / "out"
    assert cli.main(["sweep", str(tmp_path / "t.yaml"), "--out", str(out), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "runs: 4 (model.d_model x 2, task.num_chains x 2; seeds 1)" in err   # YAML sorted
    assert err.count("jaxsim: shape group") == 2 and "compiles: 2" in err and "per device" in err
    assert not out.exists()


# one tiny config per testbed whose figures mark diverged runs (markov_mixture: the test above)
DIVERGING = {
    "sim": ({"task": {"name": "sim", "dim": 3, "num_concepts": 2, "concept_mean": 1.0,
                      "concept_mean_step": 1.0, "concept_noise": 0.1, "concept_noise_step": 0.0},
             "model": {"name": "mlp", "num_layers": 1, "d_mlp": 3},
             "train": {"steps": 20, "batch_size": 16, "eval_every": 10, "eval_batch_size": 16,
                       "optimizer": "sgd", "weight_decay": 0.0, "grad_clip": 0.0}}, 0.1),
    "concept_geometry": ({"task": {"name": "concept_geometry", "geometry": "subspaces",
                                   "dim": 8, "num_concepts": 4, "max_concept_dim": 2},
                          "model": {"name": "sae", "kind": "topk", "d_sae": 16, "k": 2},
                          "train": {"steps": 20, "batch_size": 32, "eval_every": 10,
                                    "eval_batch_size": 64, "grad_clip": 0.0}}, 3e-3),
    # matrix_completion and pcfg: the shapes of their own test files' CLI sweeps (test_*.py::
    # test_cli_sweep_analyze_plot), so the suite's shared compilation cache serves one of the two
    "matrix_completion": ({"task": {"name": "matrix_completion", "matrix_size": 5, "rank": 2},
                           "model": {"name": "encoder", "num_layers": 1, "d_model": 16,
                                     "num_heads": 2, "d_mlp": 32},
                           "train": {"steps": 20, "batch_size": 8, "eval_every": 10,
                                     "eval_batch_size": 16, "grad_clip": 0.0}}, 1e-3),
    "graph_walk": ({"task": {"name": "graph_walk", "graph": "grid", "graph_size": 3,
                             "vocab": 16, "context_length": 12},
                    "model": {"name": "gpt", "num_layers": 1, "d_model": 8, "num_heads": 2,
                              "d_mlp": 16},
                    "train": {"steps": 20, "batch_size": 8, "eval_every": 10,
                              "eval_batch_size": 16, "grad_clip": 0.0}}, 1e-3),
    "pcfg": ({"task": {"name": "pcfg", "context_length": 16},
              "model": {"num_layers": 1, "d_model": 16, "num_heads": 2, "d_mlp": 32},
              "train": {"steps": 20, "batch_size": 8, "eval_every": 10, "eval_batch_size": 16,
                        "grad_clip": 0.0}}, 3e-3),
}


def _figure_texts(fig) -> str:
    """Every title and text of a matplotlib figure, joined."""
    texts = [fig._suptitle.get_text() if fig._suptitle else ""] + [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        texts += [ax.get_title(loc) for loc in ("left", "center", "right")]
        texts += [t.get_text() for t in ax.texts]
    return "\n".join(texts)


@pytest.mark.parametrize("testbed", list(DIVERGING))
def test_a_diverged_run_is_marked_and_its_figures_still_draw(testbed, tmp_path, capsys,
                                                             monkeypatch):
    """train.lr 1e30 makes run 1 diverge (NaN): runs.csv and analysis.json mark it, analyze
    and plot exit 0 (no NaN reaches an SVD or a log axis), and every figure either names run 1
    as diverged and not drawn, or shows one chosen run that is not run 1."""
    from matplotlib.figure import Figure
    shown, savefig = {}, Figure.savefig

    def recording(fig, path, *args, **kwargs):
        shown[Path(path).name] = _figure_texts(fig)
        return savefig(fig, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording)
    raw, lr = DIVERGING[testbed]
    raw = {**raw, "sweep": {"seeds": 1, "checkpoint_every": 10, "plot": False,
                            "axes": {"train.lr": [lr, 1e30]}}}
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(raw))
    out = tmp_path / "d"
    assert cli.main(["sweep", str(tmp_path / "d.yaml"), "--out", str(out), "-q"]) == 0
    assert [r["status"] for r in results.read_runs(out)] == ["done", "diverged"]
    assert cli.main(["analyze", str(out), "--sequences", "8", "-q"]) == 0
    import json
    doc = json.loads((out / "analysis.json").read_text())
    assert [r["status"] for r in doc["runs"]] == ["done", "diverged"]
    capsys.readouterr()
    assert cli.main(["plot", str(out), "-q"]) == 0, capsys.readouterr().err
    drawn = [Path(line.split("wrote ", 1)[1]) for line in capsys.readouterr().err.splitlines()]
    assert drawn and all(p.stat().st_size > 5000 for p in drawn)
    assert sorted(shown) == sorted(p.name for p in drawn)
    for name, text in shown.items():
        marked = "run 1 diverged (NaN loss): not drawn" in text
        one_healthy_run = "run 1" not in text and "run 0" in text
        assert marked or one_healthy_run, (name, text)


def test_figure_helpers_leave_diverged_runs_out(tmp_path):
    """drawable_analysis moves a diverged run out of the runs drawn; log_scale keeps an all-NaN
    panel linear (a log axis of nothing raises in matplotlib) and says why it is empty."""
    import json

    import matplotlib.pyplot as plt

    from jaxsim import plotting
    (tmp_path / "analysis.json").write_text(json.dumps(
        {"task": "pcfg", "runs": [{"run_id": 0, "status": "done", "grammatical": [0.5]},
                                  {"run_id": 1, "status": "diverged", "grammatical": [0.0]}]}))
    doc = plotting.drawable_analysis(tmp_path, "pcfg")
    assert [r["run_id"] for r in doc["runs"]] == [0] and doc["diverged"] == [1]
    assert plotting.drawable_analysis(tmp_path, "sim") is None
    assert plotting.diverged_note([1]) == "run 1 diverged (NaN loss): not drawn"
    fig, (empty, full) = plt.subplots(1, 2)
    empty.plot([10, 20], [np.nan, np.nan])
    full.plot([10, 20], [1.0, 0.5])
    for ax in (empty, full):
        plotting.log_scale(ax, x=True, y=True)
    assert (empty.get_xscale(), full.get_xscale(), full.get_yscale()) == ("linear", "log", "log")
    assert "every run here diverged" in empty.texts[0].get_text()
    plotting.save(fig, tmp_path, "x.png")       # draws: a log axis here would raise
    (tmp_path / "analysis.json").write_text('{"task": "pcfg", "runs": [')
    with pytest.raises(results.cfglib.ConfigError, match="analysis.json is damaged"):
        plotting.drawable_analysis(tmp_path)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _drop_column(path: Path, name: str) -> None:
    lines = [line.split(",") for line in path.read_text().splitlines()]
    at = lines[0].index(name)
    path.write_text("\n".join(",".join(c for i, c in enumerate(line) if i != at)
                              for line in lines) + "\n")


# fault -> (how, what the refusal names, the commands that need the damaged file)
FAULTS = {
    "plan.json truncated": (lambda d: _truncate(d / "plan.json"),
                            "plan.json is damaged", {"analyze", "open"}),
    "plan.json not a plan": (lambda d: (d / "plan.json").write_text('{"version": 2, "groups": 3}'),
                             "plan.json is damaged", {"analyze", "open"}),
    "chunk checkpoints deleted": (lambda d: shutil.rmtree(d / "checkpoints" / "group_000"
                                                          / "chunk_000"),
                                  "no checkpoints in", {"analyze", "open"}),
    "metrics.npz truncated": (lambda d: _truncate(d / "metrics.npz"),
                              "metrics.npz is damaged", {"plot", "open"}),
    "runs.csv without a column": (lambda d: _drop_column(d / "runs.csv", "shape_group"),
                                  "runs.csv is damaged", {"analyze", "plot", "open"}),
    "config.yaml deleted": (lambda d: (d / "config.yaml").unlink(),
                            "has lost its config.yaml", {"resume", "analyze", "plot", "open"}),
}


def _files(d: Path) -> dict:
    return {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and p.name != results.LOCK}


def _open_error(d: Path) -> tuple[int, str]:
    """jaxsim.open(d) and everything it reads, as (exit-code-like, message)."""
    import jaxsim
    try:
        s = jaxsim.open(d)
        s.config, s.runs, s.metrics, s.analysis, s.params(0)
    except results.cfglib.ConfigError as e:
        return 2, f"jaxsim: error: {e}"
    return 0, ""


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_damaged_results_directory_is_one_line_then_rebuilt(fault, done, tmp_path, capsys):
    """Each command that needs the damaged file exits 2 with one line naming it and what to do,
    and changes no file; the others work. Then resume rebuilds what can be rebuilt (plan.json
    from config.yaml and runs.csv, a deleted chunk by training it again, metrics.npz, runs.csv)
    to the bytes of the undamaged sweep; a lost config.yaml cannot be, and resume says so."""
    damage, needle, refused = FAULTS[fault]
    for command in ("analyze", "plot", "open", "resume"):
        d = tmp_path / command
        shutil.copytree(done, d)
        damage(d)
        before = _files(d)
        capsys.readouterr()
        if command == "open":
            code, err = _open_error(d)
        else:
            code = cli.main([command, str(d), "-q", *(["--sequences", "2"]
                                                       if command == "analyze" else [])])
            err = capsys.readouterr().err.strip()
        if command in refused:
            assert code == 2 and len(err.splitlines()) == 1 and needle in err, (command, err)
            assert ("jaxsim resume" in err or "copy it back" in err) and "Traceback" not in err
            assert _files(d) == before, command              # nothing touched, nothing lost
        else:
            assert code == 0, (command, err)
    if "resume" not in refused:          # rebuilt: the undamaged sweep's files
        fixed = tmp_path / "resume"
        for name in ("config.yaml", "plan.json", "runs.csv"):
            assert (fixed / name).read_bytes() == (done / name).read_bytes(), name
        _same_metrics(fixed, done)        # (an npz's bytes hold its write time)

        def steps(d):
            return sorted(p.relative_to(d) for p in d.glob("checkpoints/*/*/step_*"))
        assert steps(fixed) == steps(done)
