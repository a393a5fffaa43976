"""`jaxsim analyze` and `jaxsim plot` of the safety fine-tuning testbed, end to end on a tiny
pretrain -> staged DPO sweep (one shared pair of sweeps), checked against numbers computed here
independently from the saved checkpoints (numpy SVDs of the fine-tuned minus the source
kernels) and against what a run that barely moves (lr 1e-9) must give."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import jaxsim
from jaxsim import cli, results
from conftest import tiny_raw

SMALL = {"name": "safety_pcfg", "min_operand_length": 6, "max_operand_length": 8}
MODEL = {"num_layers": 2, "d_model": 16, "num_heads": 2, "d_mlp": 32}
LRS = [1e-9, 1e-2, 1e30]            # no change, a real change, a diverging run
SEQUENCES = 16


def _strict_json(text: str):
    def refuse(name):
        raise ValueError(f"analysis.json holds {name}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    base = tmp_path_factory.mktemp("safety_analysis")
    pre = base / "pre"
    jaxsim.sweep(tiny_raw(task=SMALL, model=MODEL, train={"steps": 20, "eval_every": 10}),
                 out=pre, progress=False)
    raw = tiny_raw(task={**SMALL, "name": "safety_pcfg_finetune", "objective": "dpo"},
                   model=MODEL, train={"steps": 20, "eval_every": 10},
                   init={"source": str(pre)},
                   sweep={"seeds": 1, "checkpoint_every": 10, "plot": False,
                          "axes": {"train.lr": LRS}})
    (base / "ft.yaml").write_text(yaml.safe_dump(raw))
    ft = base / "ft"
    assert cli.main(["sweep", str(base / "ft.yaml"), "--out", str(ft), "-q"]) == 0
    assert cli.main(["analyze", str(ft), "--sequences", str(SEQUENCES), "-q"]) == 0
    assert cli.main(["plot", str(ft), "-q"]) == 0
    doc = _strict_json((ft / results.ANALYSIS).read_text())
    return pre, ft, doc


def _run(doc, lr):
    return next(r for r in doc["runs"] if r["lr"] == pytest.approx(lr))


def _kernels(params, layer: int, which: str) -> np.ndarray:
    """W as out x in (the PyTorch layout the analysis uses): the flax kernel transposed."""
    return np.asarray(params[f"block{layer}"][which]["kernel"], np.float64).T


def test_the_diverging_run_is_marked(sweeps):
    _, ft, doc = sweeps
    status = {int(r["run_id"]): r["status"] for r in results.read_runs(ft)}
    assert [status[r["run_id"]] for r in doc["runs"]] == ["done", "done", "diverged"]
    assert [r["lr"] for r in doc["runs"]] == pytest.approx(LRS)


def test_delta_spectrum_equals_numpy_svd_of_the_checkpoints(sweeps):
    """σ(ΔW) and ‖ΔW‖/‖W_pre‖ of every MLP matrix against numpy on the kernels read from the
    two sweeps' checkpoints: the fine-tuned run's last and its source run's at source_step."""
    pre, ft, doc = sweeps
    fine, source = jaxsim.open(ft), jaxsim.open(pre)
    assert fine.source.dir.resolve() == pre.resolve()
    checked = 0
    for run in doc["runs"][:2]:
        row = next(r for r in results.read_runs(ft) if int(r["run_id"]) == run["run_id"])
        assert (run["source_run"], run["source_step"]) == (int(row["source_run"]),
                                                           int(row["source_step"]))
        p_ft = fine.params(run["run_id"])
        p_pre = source.params(run["source_run"], run["source_step"])
        for layer in range(MODEL["num_layers"]):
            for which in ("fc", "proj"):
                w_pre = _kernels(p_pre, layer, which)
                delta = _kernels(p_ft, layer, which) - w_pre
                got = run["weights"][f"{which}{layer}"]
                sigma = np.linalg.svd(delta, compute_uv=False)
                np.testing.assert_allclose(got["sigma"], sigma, rtol=2e-3,
                                           atol=2e-4 * sigma[0] + 1e-12)
                np.testing.assert_allclose(got["relative_norm"],
                                           np.linalg.norm(delta) / np.linalg.norm(w_pre),
                                           rtol=2e-3, atol=1e-12)
                checked += 1
    assert checked == 2 * 2 * MODEL["num_layers"]
    # the numbers are not trivially equal: the real fine-tuning run moved its weights
    assert _run(doc, 1e-2)["weights"]["fc0"]["relative_norm"] > 1e-3


def test_alignment_and_baseline_equal_numpy(sweeps):
    """The null-space alignment of ΔW's top-k left / right singular directions with W_pre's
    complement of its 90 %-energy subspace, and the random baseline d_null / d, in numpy."""
    pre, ft, doc = sweeps
    run = _run(doc, 1e-2)
    p_ft = jaxsim.open(ft).params(run["run_id"])
    p_pre = jaxsim.open(pre).params(run["source_run"], run["source_step"])
    for layer in range(MODEL["num_layers"]):
        for which in ("fc", "proj"):
            w_pre = _kernels(p_pre, layer, which)
            delta = _kernels(p_ft, layer, which) - w_pre
            k = min(doc["top_k"], *delta.shape)
            u_d, _, vt_d = np.linalg.svd(delta)
            u_p, s_p, vt_p = np.linalg.svd(w_pre)
            energy = np.cumsum(s_p ** 2) / np.sum(s_p ** 2)
            k_pre = min(int(np.sum(energy <= 0.9)) + 1, len(s_p))
            got = run["weights"][f"{which}{layer}"]
            for side, q, basis in (("left", u_d[:, :k], u_p), ("right", vt_d[:k].T, vt_p.T)):
                principal = basis[:, :k_pre]
                inside = np.sum((principal.T @ q) ** 2, axis=0)
                assert got[f"alignment_{side}"] == pytest.approx(np.mean(1 - inside), abs=2e-3)
                d = basis.shape[0]
                assert got[f"baseline_{side}"] == pytest.approx((d - k_pre) / d, abs=1e-6)


def test_a_run_that_barely_moves_equals_its_source(sweeps):
    """At lr 1e-9, ΔW ≈ 0 and every before/after number coincides (the 'pretrained' side is
    the source run the fine-tuned one started from); at lr 1e-2 the weights do move."""
    _, _, doc = sweeps
    still, moved = _run(doc, 1e-9), _run(doc, 1e-2)
    for name, w in still["weights"].items():
        assert w["relative_norm"] < 1e-5, name
        assert moved["weights"][name]["relative_norm"] > 100 * w["relative_norm"], name
    for site in doc["sites"]:
        sep = still["separation"][site]
        assert sep["finetuned"] == pytest.approx(sep["pretrained"], rel=1e-3, abs=1e-5)
        for split in doc["query_splits"]:
            a, b = (still["centroids"][m][site][split]["l2_gap"] for m in ("pretrained",
                                                                           "finetuned"))
            assert a == pytest.approx(b, rel=1e-3, abs=1e-5)
    for split in doc["splits"]:
        assert still["refusal"]["finetuned"][split] == still["refusal"]["pretrained"][split]
    assert still["lipschitz"]["finetuned"]["unsafe"] == pytest.approx(
        still["lipschitz"]["pretrained"]["unsafe"], rel=1e-3)


def test_attack_and_refusal_fields(sweeps):
    """The soft-token attack lowers its own target loss (the compliant output's cross-entropy)
    on every healthy run; refusal before the attack is the unsafe split's refusal."""
    _, _, doc = sweeps
    for run in doc["runs"][:2]:
        attack = run["attack"]
        assert attack["loss_after"] < attack["loss_before"]
        assert attack["refusal_before"] == run["refusal"]["finetuned"]["unsafe"]
        for value in (attack["refusal_before"], attack["refusal_after"]):
            assert 0.0 <= value <= 1.0
            assert value * SEQUENCES == pytest.approx(round(value * SEQUENCES))


def test_pca_file_and_summary_columns(sweeps):
    _, ft, doc = sweeps
    with np.load(ft / "analysis_safety.npz") as f:
        assert f["pcs"].shape == (3, 2, 2 * MODEL["num_layers"], 5, SEQUENCES, 2)
        assert list(f["run_id"]) == [r["run_id"] for r in doc["runs"]]
        assert np.isfinite(f["pcs"][:2]).all()
        # PCA coordinates are centred on the pooled points
        np.testing.assert_allclose(f["pcs"][:2].reshape(2, 2, 4, -1, 2).mean(axis=3), 0,
                                   atol=1e-3)
    table = jaxsim.open(ft).summary
    for column in ("alignment", "alignment_random", "delta_rank", "separation",
                   "refusal_attacked"):
        assert f"{column}_mean" in table.columns, column


def test_figures_exist_and_name_the_diverged_run(sweeps, monkeypatch):
    from matplotlib.figure import Figure

    from jaxsim.testbeds.safety_pcfg import mechanism_figures
    _, ft, doc = sweeps
    names = ["safety_delta_spectra.png", "safety_alignment.png",
             "safety_activations_pca.png", "safety_attack_refusal.png"]
    for name in names + ["safety_curves.png"]:
        assert (ft / "figures" / name).stat().st_size > 5000, name
    titles = {}
    savefig = Figure.savefig

    def recording(fig, path, *args, **kwargs):
        titles[Path(path).name] = fig._suptitle.get_text() if fig._suptitle else ""
        return savefig(fig, path, *args, **kwargs)
    monkeypatch.setattr(Figure, "savefig", recording)
    drawn = mechanism_figures.draw(ft)
    assert sorted(p.name for p in drawn) == sorted(names)
    diverged = doc["runs"][2]["run_id"]
    for name in names:
        assert f"run {diverged} diverged (NaN loss): not drawn" in titles[name], name


def test_analyze_needs_a_fine_tuning_sweep(sweeps):
    pre, _, _ = sweeps
    assert cli.main(["analyze", str(pre), "-q"]) == 2       # safety_pcfg has no analysis
