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


INT32_MAX = 2**31 - 1


@pytest.mark.parametrize("raw, key", [
    (tiny_raw(train={"warmup_steps": 3_000_000_000}), "train.warmup_steps"),
    (tiny_raw(train={"steps": 2**31, "eval_every": 2**30}), "train.steps"),
    (tiny_raw(task={"num_chains": 2**31}), "task.num_chains"),
    (tiny_raw(model={"k": 2**40}), "model.k"),
    (tiny_raw(model={"dead_steps": 2**31}), "model.dead_steps"),
    (tiny_raw(sweep={"seeds": 2**31}), "sweep.seeds"),
    (tiny_raw(model={"d_model": 10**12}), "model.d_model"),
    ({"task": {"name": "matrix_completion", "rank": 2**31}}, "task.rank"),
    (tiny_raw(sweep={"axes": {"train.warmup_steps": [0, 2**31]}}), "sweep.axes.train.warmup_steps"),
    (tiny_raw(sweep={"save_steps": [10, 2**31]}), "sweep.save_steps"),
])
def test_integers_must_fit_int32(raw, key):
    with pytest.raises(ConfigError) as err:
        config.from_dict(raw)
    message = str(err.value)
    assert message.startswith(key) and str(INT32_MAX) in message and "\n" not in message


def test_the_largest_int32_passes_field_validation():
    cfg = config.from_dict(tiny_raw(train={"warmup_steps": INT32_MAX}))
    assert cfg.train.warmup_steps == INT32_MAX


@pytest.mark.parametrize("raw, needle", [
    (tiny_raw(sweep={"seeds": 2_000_000}), "the sweep has 2,000,000 runs"),
    (tiny_raw(sweep={"seeds": 1000, "axes": {"train.lr": [1e-3 * i for i in range(1, 1002)]}}),
     "1,001,000 runs"),
    (tiny_raw(sweep={"seeds": 1000, "grids": [{"train.lr": [1e-3 * i for i in range(1, 600)]},
                                              {"train.warmup_steps": list(range(600))}]}),
     "1,199,000 runs"),
    (tiny_raw(train={"steps": 2_000_000, "eval_every": 1}), "2,000,000 evaluations per run"),
    (tiny_raw(model={"d_model": 100_000, "num_heads": 4}), "4e+10 parameters"),
    ({"task": {"name": "concept_geometry"}, "model": {"name": "sae", "d_sae": 2**30}},
     "model.d_sae=1073741824, task.dim=64"),
    (tiny_raw(model={"num_layers": 100_000}), "model.num_layers must be <= 1024"),
    (tiny_raw(sweep={"axes": {"model.d_model": [16, 65_536]}}), "sweep.axes.model.d_model=65536: "),
])
def test_impossible_plans_are_refused_at_load(raw, needle):
    with pytest.raises(ConfigError) as err:
        config.from_dict(raw)
    message = str(err.value)
    assert needle in message and "\n" not in message
    assert any(cap in message for cap in ("1,000,000", "100,000", "2**31", "1024"))


def test_plans_at_the_caps_pass():
    config.from_dict(tiny_raw(sweep={"seeds": 1_000_000}))
    config.from_dict(tiny_raw(train={"steps": 100_000, "eval_every": 1}))
    from jaxsim.config.rules import param_estimate
    assert param_estimate(config.from_dict(tiny_raw(model={"num_layers": 1024}))) < 2**31


def test_model_name_is_not_an_axis():
    for sweep in ({"axes": {"model.name": ["gpt", "encoder"]}},
                  {"grids": [{"model.name": ["gpt"]}]}):
        with pytest.raises(ConfigError, match="model.name cannot be an axis; run one sweep per "
                                              "model"):
            config.from_dict(tiny_raw(sweep=sweep))


def test_a_key_given_twice_is_refused():
    with pytest.raises(ConfigError, match="override train.steps is given twice"):
        config.apply_overrides(tiny_raw(), ["train.steps=10", "train.steps=20"])
    with pytest.raises(ConfigError, match="override sweep.axes.train.lr is given twice"):
        config.apply_overrides(tiny_raw(), ["sweep.axes.train.lr=[1]", "sweep.axes.train.lr=[2]"])
    config.apply_overrides(tiny_raw(), ["sweep.axes={}", "sweep.axes.train.lr=[1e-3]"])


@pytest.mark.parametrize("text, needle", [
    ("train:\n  steps: 10\n  eval_every: 5\n  steps: 20\n", "key 'steps' appears twice in one "
                                                            "mapping (lines 2 and 4)"),
    ("train: {steps: 10}\nmodel: {}\ntrain: {lr: 0.1}\n", "key 'train' appears twice in one "
                                                          "mapping (lines 1 and 3)"),
    ("sweep:\n  axes:\n    train.lr: [1]\n    train.lr: [2]\n", "key 'train.lr' appears twice"),
    ("train: {steps: 10, steps: 20}\n", "key 'steps' appears twice in one mapping (line 1)"),
])
def test_a_yaml_key_given_twice_is_refused_with_its_lines(tmp_path, text, needle):
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert needle in str(err.value) and "dup.yaml" in str(err.value)
    assert "\n" not in str(err.value)


def test_the_yaml_loader_stays_safe(tmp_path):
    import sys
    loadmod = sys.modules["jaxsim.config.load"]
    assert issubclass(loadmod._UniqueKeyLoader, __import__("yaml").SafeLoader)
    path = tmp_path / "evil.yaml"
    path.write_text("train: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(path)
    path.write_text("train: {<<: {steps: 20, eval_every: 10}, steps: 40}\n")  # a merge key's
    cfg = config.load(path)                                  # value may be overridden
    assert (cfg.train.steps, cfg.train.eval_every) == (40, 10)
    path.write_text("base: &b {steps: 10}\ntrain: *b\n")   # anchors and aliases still load
    with pytest.raises(ConfigError, match="unknown section 'base'"):
        config.load(path)


def test_a_misspelled_section_lists_sections_not_every_key():
    for overrides in (["trian.steps=5"], ["sweep.axes.trian.lr=[1e-3]"]):
        with pytest.raises(ConfigError) as err:
            config.from_dict(config.apply_overrides(tiny_raw(), overrides))
        message = str(err.value)
        assert "no section 'trian'" in message and "did you mean 'train'" in message
        assert "task, model, train, init" in message and "train.steps" not in message.split(";")[1]


def test_an_unknown_key_lists_only_its_section():
    for overrides in (["train.stpes=5"], ["sweep.axes.train.lrr=[1e-3]"]):
        with pytest.raises(ConfigError) as err:
            config.from_dict(config.apply_overrides(tiny_raw(), overrides))
        message = str(err.value)
        assert "did you mean 'train." in message and "train.eval_every" in message
        assert "model." not in message and "task." not in message


def test_a_missing_config_file_suggests_the_nearest(tmp_path):
    (tmp_path / "quickstart.yaml").write_text("{}\n")
    with pytest.raises(ConfigError, match=r"did you mean '.*quickstart\.yaml'"):
        config.load(tmp_path / "quickstrat.yaml")
    with pytest.raises(ConfigError) as err:
        config.load(tmp_path / "zzz.yaml")
    assert "does not exist" in str(err.value) and "did you mean" not in str(err.value)
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "no_such_folder" / "a.yaml")


def test_a_short_train_steps_override_rescales_the_evaluations(tmp_path, caplog):
    """train.steps=150 on a config that evaluates every 100 steps is not refused: eval_every
    becomes the divisor of 150 nearest the config's 15 evaluations, checkpoint_every scales
    with it, and one log line says so; a multiple, or an explicit eval_every, changes nothing;
    the same steps written in the YAML itself are still refused."""
    import logging

    import yaml
    raw = tiny_raw(train={"steps": 1500, "eval_every": 100}, sweep={"checkpoint_every": 500})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    logger = logging.getLogger("jaxsim")      # the CLI's handler stops it at "jaxsim"
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="jaxsim"):
            cfg = config.load(tmp_path / "c.yaml", ["train.steps=150"])
    finally:
        logger.removeHandler(caplog.handler)
    assert (cfg.train.steps, cfg.train.eval_every, cfg.sweep.checkpoint_every) == (150, 10, 50)
    assert any("train.eval_every 100 -> 10 (15 evaluations, the config had 15)" in r.message
               and "sweep.checkpoint_every 500 -> 50" in r.message for r in caplog.records)
    cfg = config.load(tmp_path / "c.yaml", ["train.steps=500"])
    assert (cfg.train.eval_every, cfg.sweep.checkpoint_every) == (100, 500)
    cfg = config.load(tmp_path / "c.yaml", ["train.steps=150", "train.eval_every=50"])
    assert (cfg.train.eval_every, cfg.sweep.checkpoint_every) == (50, 500)
    cfg = config.load(tmp_path / "c.yaml", ["train.steps=150", "sweep.checkpoint_every=30"])
    assert (cfg.train.eval_every, cfg.sweep.checkpoint_every) == (10, 30)
    from jaxsim.config import budget
    assert budget.nearest_divisor(333, 22.2) == 9 and budget.nearest_divisor(12, 5) == 6
    with pytest.raises(ConfigError, match="multiple of train.eval_every"):
        config.from_dict(tiny_raw(train={"steps": 150, "eval_every": 100}))
