"""The config-key reference, generated from the config dataclasses (`jaxsim keys [TESTBED]`).

docs/config.md is `jaxsim keys`'s output; a test fails when the two differ, so the keys and their
docs cannot drift apart.
"""
from __future__ import annotations

import dataclasses

from jaxsim.config.schema import CORE_SECTIONS

KINDS = {False: "static", True: "per run", "max": "per run (group max static)"}


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else ""


def _allowed(meta: dict) -> str:
    if meta.get("choices"):
        return ", ".join(str(c) for c in meta["choices"])
    lo, hi = meta.get("min"), meta.get("max")
    parts = []
    if lo is not None:
        parts.append(f"{'>' if meta.get('min_exclusive') else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"<= {hi:g}")
    return ", ".join(parts)


def section_table(section: str, cls: type) -> list[str]:
    """A Markdown table of one section's fields."""
    lines = ["| key | type | default | allowed | varies | doc |", "|---|---|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        meta = dict(f.metadata)
        kind = (KINDS[meta.get("dynamic", False)]
                if section not in ("sweep", "steer", "edit") else "")
        default = _default(f)
        type_name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", f.type)
        doc = meta.get("doc", "") or ("the testbed (its registry name, or MODULE:OBJECT)"
                                      if section == "task" and f.name == "name" else "")
        lines.append(f"| `{section}.{f.name}` | {_cell(type_name)} | `{_cell(repr(default))}` | "
                     f"{_cell(_allowed(meta))} | {kind} | {_cell(doc)} |")
    return lines


def testbed_section(testbed) -> list[str]:
    lines = [f"## task: `{testbed.name}`", ""]
    if testbed.doc:
        lines += [testbed.doc[0].upper() + testbed.doc[1:] + ".", ""]
    lines += [f"Models: {', '.join(f'`{m}`' for m in testbed.models)} (default "
              f"`{testbed.models[0]}`). Splits: {', '.join(testbed.splits)}.", ""]
    return lines + section_table("task", testbed.config) + [""]


def render(only: str | None = None) -> str:
    """The reference: the core sections and every built-in testbed's task section (or, with
    `only`, that testbed's task section alone)."""
    from jaxsim import testbeds
    if only is not None:
        return "\n".join(testbed_section(testbeds.get(only))).rstrip() + "\n"
    lines = ["# Config keys", "",
             "Generated from the config dataclasses by `jaxsim keys` (do not edit: "
             "`jaxsim keys > docs/config.md`; a test checks the two agree).", "",
             "A config has four sections. `task.name` picks the testbed, whose own keys form the "
             "`task` section; `model`, `train` and `sweep` are the same for every testbed. "
             "*varies*: a static key changes array shapes (one compile per value: a sweep axis "
             "over it is a loop over compiles); a per-run key is a vmapped array (a sweep axis "
             "over it shares one compile); \"group max static\" keeps the largest value of a "
             "compile group static (a bank size) and masks per run.", ""]
    for section, cls in CORE_SECTIONS.items():
        lines += [f"## {section}", ""] + section_table(section, cls) + [""]
    for testbed in testbeds.builtin().values():
        lines += testbed_section(testbed)
    from jaxsim.steering.config import SteerConfig
    lines += ["## steer (`jaxsim steer DIR CONFIG`)", "",
              "A steering config is its own file with one section, `steer` "
              "([docs/steering.md](steering.md)); overrides are `steer.KEY=VALUE`.", ""]
    lines += section_table("steer", SteerConfig) + [""]
    from jaxsim.editing.config import EditConfig
    lines += ["## edit (`jaxsim edit DIR CONFIG`)", "",
              "An editing config is its own file with one section, `edit` "
              "([docs/editing.md](editing.md)); overrides are `edit.KEY=VALUE`.", ""]
    lines += section_table("edit", EditConfig) + [""]
    return "\n".join(lines).rstrip() + "\n"
