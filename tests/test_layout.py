"""The plug-in layout holds: the core knows testbeds only through the registry, figures read
files only, and every built-in testbed is complete (config docs, its docs page, its keys in
docs/config.md)."""
import ast
import dataclasses
from pathlib import Path

import pytest

from jaxsim import testbeds
from jaxsim import testbed as protocol

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "jaxsim"
GENERIC = ["models", "training", "sweeps", "analysis", "plotting", "config", "results", "summaries",
           "grid.py", "cli.py", "testbed.py", "api.py", "saved.py", "stages.py"]
ANALYSIS_MODULES = {"analysis", "diagnostics", "plateau", "earley", "icl", "representations",
                    "concepts", "probes", "grammaticality", "algorithms"}


def _files(names):
    for name in names:
        path = PACKAGE / name
        yield from (sorted(path.rglob("*.py")) if path.is_dir() else [path])


def _strings(tree: ast.AST) -> set[str]:
    """String constants of the code (docstrings excluded)."""
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docs}


def test_the_generic_layers_name_no_testbed():
    names = set(testbeds.BUILTIN)
    for path in _files(GENERIC):
        found = _strings(ast.parse(path.read_text())) & names
        if path.name == "schema.py":
            found -= {"markov_mixture"}         # DEFAULT_TASK: the testbed of a bare config
        assert not found, f"{path.relative_to(ROOT)} names testbed(s) {sorted(found)}"


def test_figures_import_no_analysis_code():
    for path in sorted((PACKAGE / "testbeds").glob("*/figures.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                parts = set(node.module.split(".")) | {a.name for a in node.names}
                assert not (parts & ANALYSIS_MODULES) and "jaxsim.analysis" not in node.module, \
                    f"{path.relative_to(ROOT)} imports {node.module}"


@pytest.mark.parametrize("name", sorted(testbeds.BUILTIN))
def test_every_builtin_testbed_is_complete(name):
    testbed = testbeds.get(name)
    assert isinstance(testbed, protocol.Testbed) and testbed.name == name
    assert testbed.config().name == name
    assert (testbed.objective is None) != (testbed.sae is None)
    for f in dataclasses.fields(testbed.config)[1:]:
        assert f.metadata.get("doc"), f"task.{f.name} of {name} has no doc"
    assert (ROOT / "docs" / "testbeds" / f"{name}.md").is_file()
    assert f"## task: `{name}`" in (ROOT / "docs" / "config.md").read_text()


def test_readme_is_a_front_page():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300
