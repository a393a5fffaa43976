"""Summaries (issue 17): runs.csv's final columns, summary.csv per axis value, `jaxsim summary`
(one directory and two side by side), `Sweep.summary` / `jaxsim.summary`, and the live
per-evaluation line per axis value with constant metrics shown once."""
import contextlib
import io

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import tiny_raw

import jaxsim
from jaxsim import cli, results, summaries, testbeds
from jaxsim.sweeps import live
from jaxsim.testbed import Derived

AXES = {"task.num_chains": [1, 4]}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A tiny markov_mixture sweep (N in {1, 4} x 2 seeds, 20 steps) through the CLI, with its
    stderr (the live lines and the summary table)."""
    folder = tmp_path_factory.mktemp("summary")
    (folder / "t.yaml").write_text(yaml.safe_dump(tiny_raw(sweep={"axes": AXES, "seeds": 2})))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert cli.main(["sweep", str(folder / "t.yaml"), "--out", str(folder / "s"),
                         "--no-progress"]) == 0
    return folder / "s", err.getvalue()


def _expected(out) -> pd.DataFrame:
    """The summary recomputed here from metrics.npz and runs.csv with pandas alone."""
    m = np.load(out / "metrics.npz")
    runs = pd.read_csv(out / "runs.csv")
    final = runs[["run_id", "task.num_chains"]].assign(
        eval_loss_ood=m["eval_loss_ood"][:, -1],
        gap_ood=m["eval_loss_ood"][:, -1] - m["oracle_loss_ood"][:, -1],
        gap_id=m["eval_loss_id"][:, -1] - m["oracle_loss_id"][:, -1])
    return final.groupby("task.num_chains").agg(["mean", "std"])


def test_summary_csv_is_a_groupby_of_the_metrics(swept):
    out, _ = swept
    table = pd.read_csv(out / "summary.csv")
    expected = _expected(out)
    assert table["task.num_chains"].tolist() == [1, 4] and table.runs.tolist() == [2, 2]
    assert table.diverged.tolist() == [0, 0] and table.step.tolist() == [20, 20]
    for name in ("eval_loss_ood", "gap_id", "gap_ood"):
        for stat in ("mean", "std"):
            np.testing.assert_allclose(table[f"{name}_{stat}"], expected[name][stat], rtol=1e-5)
    pd.testing.assert_frame_equal(jaxsim.open(out).summary, summaries.of_directory(out))
    pd.testing.assert_frame_equal(jaxsim.summary(out), summaries.of_directory(out))


def test_runs_csv_keeps_its_columns_and_appends_the_final_metrics(swept):
    out, _ = swept
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs.columns[:7]) == ["run_id", "seed", "task.num_chains", "status",
                                      "shape_group", "chunk", "index_in_chunk"]
    assert list(runs.columns[7:]) == [
        "final_step", "final_train_loss", "final_eval_loss_id", "final_oracle_loss_id",
        "final_eval_loss_ood", "final_oracle_loss_ood", "final_gap_id", "final_gap_ood"]
    m = results.read_metrics(out)
    np.testing.assert_allclose(runs.final_eval_loss_ood, m["eval_loss_ood"][:, -1], rtol=1e-6)
    np.testing.assert_allclose(runs.final_gap_ood,
                               m["eval_loss_ood"][:, -1] - m["oracle_loss_ood"][:, -1],
                               rtol=1e-5)
    assert (runs.final_step == 20).all()


def test_the_sweep_prints_the_table_and_a_live_line_per_axis_value(swept):
    out, err = swept
    lines = err.splitlines()
    evals = [line for line in lines if line.startswith("[group 0 chunk_000] step ")]
    assert len(evals) == 2
    expected = _expected(out)
    m = results.read_metrics(out)
    gap = (m["eval_loss_ood"] - m["oracle_loss_ood"])[:, -1]
    per_n = "/".join(f"{v:.4g}" for v in (gap[:2].mean(), gap[2:].mean()))
    assert "task.num_chains 1/4 (mean over seeds)" in evals[-1]
    assert f"gap_ood {per_n}" in evals[-1], evals[-1]
    # the oracle losses never change: on the first line, named once on the second
    assert "oracle_loss_id" in evals[0] and "oracle_loss_ood" in evals[0]
    assert "(oracle_loss_id, oracle_loss_ood unchanged since step 10: not repeated)" in evals[1]
    assert " oracle_loss_id 1" not in evals[1]
    start = next(i for i, line in enumerate(lines) if line.startswith("jaxsim: final results"))
    assert f"-> {out / 'summary.csv'}" in lines[start]
    header, first, second = lines[start + 1:start + 4]
    assert header.split()[:2] == ["task.num_chains", "runs"] and "gap_ood" in header
    mean, std = expected["gap_ood"]["mean"][1], expected["gap_ood"]["std"][1]
    places = summaries.text.decimals(mean)
    assert first.split()[0] == "1" and f"{mean:.{places}f} ± {std:.{places}f}" in first
    assert second.split()[0] == "4"


def test_jaxsim_summary_prints_one_or_two_directories(swept, capsys):
    out, _ = swept
    assert cli.main(["summary", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    table = summaries.of_directory(out)
    assert printed[0] == summaries.title(table, f"of {out}")
    assert printed[1:] == summaries.render(table, "").splitlines()[1:]
    assert cli.main(["summary", str(out), str(out)]) == 0
    both = capsys.readouterr().out
    assert f"A = {out} (step 20), B = {out} (step 20)" in both
    block = next(b for b in both.split("\n\n") if b.split()[:3] == ["task.num_chains",
                                                                    "gap_id", "A"])
    assert block.splitlines()[0].split()[-3:] == ["B", "-", "A"]
    assert [line.split()[-1] for line in block.splitlines()[1:]] == ["+0.0000"] * 2, block
    compared = jaxsim.summary(out, out)
    np.testing.assert_array_equal(compared.gap_ood_diff, 0.0)
    assert cli.main(["summary", str(out / "nowhere")]) == 2


def test_final_values_take_each_runs_last_evaluation_and_keep_divergence():
    nan = np.nan
    metrics = {"step": np.array([10, 20, 30]),
               "eval_loss_id": np.array([[3.0, 2.0, 1.0],      # finished
                                         [3.0, 2.0, nan],      # a 20-step shape group
                                         [3.0, nan, nan]]),    # diverged after step 10
               "oracle_loss_id": np.array([[0.5, 0.5, 0.5], [0.4, 0.4, nan],
                                           [0.3, 0.3, 0.3]])}
    steps, values = summaries.final_values(metrics)
    assert steps.tolist() == [30, 20, 30]
    np.testing.assert_array_equal(values["eval_loss_id"], [1.0, 2.0, nan])   # never 3.0
    np.testing.assert_array_equal(values["oracle_loss_id"], [0.5, 0.4, 0.3])


def test_aggregate_counts_diverged_runs_and_takes_the_most_common_name():
    frame = pd.DataFrame({"run_id": range(4), "seed": [0, 1, 0, 1], "a": [1, 1, 2, 2],
                          "status": ["done", "done", "done", "diverged"], "step": 30,
                          "x": [1.0, 3.0, 5.0, np.nan],
                          "verdict": ["p", "p", "q", None]})
    table = summaries.aggregate(frame, ["a"], ["x", "verdict"])
    assert table.runs.tolist() == [2, 1] and table.diverged.tolist() == [0, 1]
    assert table.x_mean.tolist() == [2.0, 5.0] and table.x_std[0] == pytest.approx(2 ** 0.5)
    assert np.isnan(table.x_std[1])          # one run: no spread
    assert table.verdict.tolist() == ["p", "q"] and table.verdict_share.tolist() == [1.0, 1.0]
    text = summaries.render(table, "title")
    assert "2.000 ± 1.414" in text and "p 2/2" in text and "diverged" in text.splitlines()[1]
    # a verdict missing from every run of a row stays a verdict column (no _mean beside it)
    table = summaries.aggregate(frame.assign(verdict=["p", "p", None, None]), ["a"], ["verdict"])
    assert "verdict_mean" not in table and table.verdict[0] == "p" and pd.isna(table.verdict[1])
    tiny = summaries.aggregate(frame.assign(x=[2e-10, 4e-10, 1.0, 1.0]), ["a"], ["x"])
    assert "3.000e-10 ± 1.4e-10" in summaries.render(tiny, "title")


def test_live_line_groups_by_axis_value_and_switches_to_min_median_max():
    testbed = testbeds.get("markov_mixture")
    values = [{"task.num_chains": n, "train.lr": 0.01} for n in (2, 2, 512, 512)]
    line = live.LiveLine(testbed, values)
    row = {"train_loss": np.array([1.0, 2.0, 3.0, 4.0, 9.0]),        # a padded slot last
           "eval_loss_id": np.array([1.0, 1.0, 2.0, 2.0, 9.0]),
           "oracle_loss_id": np.array([0.5, 0.5, 0.5, 0.5, 0.5]),
           "eval_loss_ood": np.array([3.0, 3.0, 2.0, np.nan, 9.0]),
           "oracle_loss_ood": np.array([1.0, 1.0, 1.0, 1.0, 1.0])}
    first = line(10, row)
    assert first.startswith("task.num_chains 2/512 (mean over seeds)")
    assert "train_loss 1.5/3 " in first and "gap_ood 2/1" in first      # run 3 diverged: out
    assert "oracle_loss_id 0.5/0.5" in first and "(1 of 4 runs diverged" in first
    second = line(20, dict(row, train_loss=row["train_loss"] - 0.5))
    assert "oracle_loss_id 0.5" not in second and "unchanged since step 10" in second
    assert live.groups_of([{"model.positional": "rope"}] * 2).label == \
        "model.positional=rope (mean over 2 runs)"
    many = live.groups_of([{"k": i} for i in range(10)])
    assert many.index_R is None and many.label == "min/median/max over 10 runs"
    assert live.by_group(np.arange(10.0), many, np.ones(10, bool)) == "0/4.5/9"


def test_summary_columns_skip_what_a_sweep_lacks():
    testbed = testbeds.get("markov_mixture")
    cols = summaries.summary_columns(testbed, {"eval_loss_id": np.ones(2)})
    assert list(cols) == ["eval_loss_id"]
    custom = type(testbed)(**{**testbed.__dict__, "summary_metrics": (
        Derived("double", lambda m: 2 * m["x"]),)})
    assert summaries.summary_columns(custom, {"x": np.ones(2)})["double"].tolist() == [2, 2]


def test_a_sweep_without_metrics_has_no_summary_yet(swept, tmp_path):
    import shutil

    from jaxsim.config import ConfigError
    out, _ = swept
    partial = tmp_path / "partial"
    shutil.copytree(out, partial)
    (partial / "metrics.npz").unlink()
    with pytest.raises(ConfigError, match="has no metrics.npz yet"):
        jaxsim.open(partial).summary
