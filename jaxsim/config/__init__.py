"""Typed, frozen configuration: the core sections' schema, the selected testbed's task section,
YAML load with dotted KEY=VALUE overrides, validation, and the static/dynamic split.

`from jaxsim import config` is the API: `config.load(path, overrides)`, `config.from_dict(raw)`,
`config.dump(cfg)`, `config.spec_of(cfg)`, `config.hparams_of(cfg)`, `config.field(...)` (for a
testbed's own task dataclass), and `config.ConfigError`.
"""
from jaxsim.config.build import (LEGACY_INIT_KEYS, axis_keys, from_dict, grid_axes, replace_key,
                                 resolve)
from jaxsim.config.keys import all_keys, check_value, coerce, field_info
from jaxsim.config.load import apply_overrides, dump, load, parse_override
from jaxsim.config.rules import check_consistency
from jaxsim.config.schema import (CORE_SECTIONS, DEFAULT_TASK, SAE_KINDS, SECTION_NAMES,
                                  SWEEPABLE, Config, InitConfig, ModelConfig, SweepConfig,
                                  TrainConfig, field, section_class)
from jaxsim.config.spec import (Spec, dynamic_keys, group_key, hparams_of, merge_specs,
                                run_spec, spec_of)
from jaxsim.errors import ConfigError

__all__ = ["CORE_SECTIONS", "Config", "ConfigError", "DEFAULT_TASK", "InitConfig", "LEGACY_INIT_KEYS", "ModelConfig", "SAE_KINDS",
           "SECTION_NAMES", "SWEEPABLE", "Spec", "SweepConfig", "TrainConfig", "all_keys",
           "apply_overrides", "axis_keys", "check_consistency", "check_value", "coerce", "dump",
           "dynamic_keys", "field", "field_info", "from_dict", "grid_axes", "group_key", "hparams_of", "load",
           "merge_specs", "parse_override", "replace_key", "resolve", "run_spec", "section_class",
           "spec_of"]
