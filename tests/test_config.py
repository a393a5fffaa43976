"""Config parsing, overrides and the one-line errors of bad input."""
import pytest

from jaxsim import config
from jaxsim.config import ConfigError

from conftest import tiny_raw


def test_defaults_follow_the_paper_model():
    cfg = config.Config()
    assert (cfg.model.num_layers, cfg.model.d_model, cfg.model.num_heads, cfg.model.d_mlp) == (2, 64, 4, 256)
    assert (cfg.train.beta1, cfg.train.beta2, cfg.train.lr) == (0.9, 0.95, 6e-4)
    assert cfg.task.num_states == 10 and cfg.task.alpha == 1.0 and cfg.task.weights == "uniform"


def test_overrides_set_fields_and_axes():
    raw = config.apply_overrides(tiny_raw(), ["train.steps=40", "train.lr=1e-3",
                                              "sweep.axes.task.num_chains=[4,64]",
                                              "sweep.axes.train.lr=[1e-3, 3e-4]"])
    cfg = config.from_dict(raw)
    assert cfg.train.steps == 40 and cfg.train.lr == pytest.approx(1e-3)
    assert cfg.sweep.axes == {"task.num_chains": [4, 64], "train.lr": [1e-3, 3e-4]}
    cleared = config.from_dict(config.apply_overrides(raw, ["sweep.axes={}"]))
    assert cleared.sweep.axes == {}


def test_yaml_style_exponent_strings_are_numbers():
    cfg = config.from_dict(tiny_raw(train={"lr": "6e-4"}))
    assert cfg.train.lr == pytest.approx(6e-4)


def test_static_and_dynamic_split():
    cfg = config.from_dict(tiny_raw(task={"num_chains": 7}, train={"lr": 0.01}))
    spec = config.spec_of(cfg)
    assert spec.train.lr is None and spec.task.alpha is None
    assert spec.task.num_chains == 7  # the bank size stays static
    hp = config.hparams_of(cfg)
    assert hp["train"]["lr"] == 0.01 and hp["task"]["num_chains"] == 7
    small = config.spec_of(config.from_dict(tiny_raw(task={"num_chains": 3})))
    assert config.group_key(small) == config.group_key(spec)
    assert config.merge_specs([small, spec]).task.num_chains == 7
    hash(spec)


@pytest.mark.parametrize("raw, needle", [
    (tiny_raw(train={"lrr": 1e-3}), "did you mean 'train.lr'"),
    (tiny_raw(trian={}), "unknown section 'trian'"),
    (tiny_raw(train={"steps": "many"}), "train.steps must be an integer"),
    (tiny_raw(train={"steps": 2.5}), "train.steps must be an integer"),
    (tiny_raw(model={"d_model": 30, "num_heads": 4}), "model.d_model (30) must be divisible by model.num_heads (4)"),
    (tiny_raw(sweep={"axes": {"task.num_chains": []}}), "sweep.axes.task.num_chains must be a non-empty list"),
    (tiny_raw(task={"num_states": 1}), "task.num_states must be >= 2"),
    (tiny_raw(task={"num_chains": 0}), "task.num_chains must be >= 1"),
    (tiny_raw(train={"lr": 0.0}), "train.lr must be > 0.0"),
    (tiny_raw(train={"lr": -1e-3}), "train.lr must be > 0.0"),
    (tiny_raw(sweep={"axes": {"train.lr": [1e-3, -1.0]}}), "sweep.axes.train.lr must be > 0.0"),
    (tiny_raw(sweep={"axes": {"task.num_chain": [4]}}), "did you mean 'task.num_chains'"),
    (tiny_raw(model={"positional": "alibi"}), "model.positional must be one of learned, rope"),
    (tiny_raw(train={"steps": 25, "eval_every": 10}), "multiple of train.eval_every"),
    (tiny_raw(sweep={"axes": {"model.num_heads": [2, 3]}}), "sweep.axes.model.num_heads=3"),
])
def test_bad_config_names_the_key(raw, needle):
    with pytest.raises(ConfigError) as err:
        config.from_dict(raw)
    message = str(err.value)
    assert needle in message
    assert "\n" not in message


def test_short_runs_evaluate_once_at_the_end():
    cfg = config.from_dict(config.apply_overrides(tiny_raw(), ["train.steps=5"]))
    assert cfg.train.eval_every == 5


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        config.apply_overrides({}, ["train.steps"])
    with pytest.raises(ConfigError, match="unknown key 'nope.x'"):
        config.apply_overrides({}, ["nope.x=1"])


def test_dump_roundtrip(tmp_path):
    cfg = config.from_dict(tiny_raw(sweep={"axes": {"train.lr": [1e-3, 2e-3]}, "save_steps": [10, 20]}))
    path = tmp_path / "c.yaml"
    path.write_text(config.dump(cfg))
    assert config.load(path) == cfg


def test_grids_are_a_union_of_products_with_every_key_in_every_run():
    from jaxsim import grid
    raw = tiny_raw(sweep={"axes": {"task.num_chains": [2, 4]},
                          "grids": [{"train.lr": [1e-3, 3e-3]}, {"train.weight_decay": [0.0]}]})
    cfg = config.from_dict(raw)
    runs = grid.expand(cfg)
    assert len(runs) == 2 * 2 + 2 * 1
    assert config.axis_keys(cfg) == ["task.num_chains", "train.lr", "train.weight_decay"]
    assert runs[0].values == {"task.num_chains": 2, "train.lr": 1e-3, "train.weight_decay": 0.1}
    assert runs[-1].values == {"task.num_chains": 4, "train.lr": 3e-3, "train.weight_decay": 0.0}
    assert runs[-1].config.train.lr == 3e-3 and runs[-1].config.train.weight_decay == 0.0


@pytest.mark.parametrize("grids,needle", [
    ({"train.lr": [1e-3]}, "sweep.grids must be a list"),
    ([{"train.lrr": [1e-3]}], "did you mean 'train.lr'"),
    ([{"train.lr": [-1.0]}], "sweep.grids[0].train.lr"),
    ([{"task.num_chains": [3]}], "not both"),
])
def test_bad_grids(grids, needle):
    raw = tiny_raw(sweep={"axes": {"task.num_chains": [2]}, "grids": grids})
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("(", r"\(")):
        config.from_dict(raw)


def test_docs_config_md_is_the_output_of_jaxsim_keys(capsys):
    """docs/config.md is generated from the config dataclasses (`jaxsim keys > docs/config.md`)."""
    from pathlib import Path
    from jaxsim import cli
    assert cli.main(["keys"]) == 0
    printed = capsys.readouterr().out
    assert printed == (Path(__file__).parent.parent / "docs" / "config.md").read_text(), \
        "docs/config.md is stale: run `jaxsim keys > docs/config.md`"
    for key in ("task.num_chains", "task.grammar", "task.mask_prob", "model.d_sae", "train.lr",
                "sweep.axes"):
        assert f"`{key}`" in printed


def test_a_key_of_another_testbed_is_refused_with_the_closest_valid_key():
    raw = tiny_raw(task={"rnak": 2})
    with pytest.raises(ConfigError, match="unknown key 'task.rnak' for task.name=markov_mixture"):
        config.from_dict(raw)
    raw = {"task": {"name": "matrix_completion", "mask_prb": 0.2}}
    with pytest.raises(ConfigError, match="did you mean 'task.mask_prob'"):
        config.from_dict(raw)
    with pytest.raises(ConfigError, match="for task.name=pcfg"):
        config.from_dict({"task": {"name": "pcfg", "num_states": 4}})


def test_task_name_is_not_an_axis_and_bad_names_are_named():
    with pytest.raises(ConfigError, match="task.name cannot be an axis"):
        config.from_dict(tiny_raw(sweep={"axes": {"task.name": ["markov_mixture", "pcfg"]}}))
    with pytest.raises(ConfigError, match="did you mean 'pcfg'"):
        config.from_dict({"task": {"name": "pcgf"}})
    with pytest.raises(ConfigError, match="cannot import module 'no_such_module'"):
        config.from_dict({"task": {"name": "no_such_module:TESTBED"}})


def test_a_results_dir_of_the_flat_task_section_still_loads(tmp_path):
    """config.yaml files written when one flat task section held every testbed's keys (each
    at its default) load unchanged; a non-default key of another testbed is refused."""
    legacy = {"name": "pcfg", "num_states": 10, "alpha": 1.0, "num_chains": 64,
              "weights": "uniform", "context_length": 32, "matrix_size": 7, "rank": 2,
              "mask_prob": 0.3, "grammar": "expr", "graph": "grid", "vocab": 64, "dim": 64}
    cfg = config.from_dict({"task": legacy})
    assert cfg.task.grammar == "expr" and cfg.task.context_length == 32
    assert not hasattr(cfg.task, "num_chains")
    with pytest.raises(ConfigError, match="task.rank"):
        config.from_dict({"task": {**legacy, "rank": 3}})


@pytest.mark.parametrize("text,needle", [
    ("", "is empty"), ("- 1\n- 2\n", "got a YAML list"), ("3\n", "got a YAML int")])
def test_a_config_file_that_is_not_a_mapping_is_refused(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        config.load(path)
