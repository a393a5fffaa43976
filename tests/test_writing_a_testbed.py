"""docs/writing-a-testbed.md works as written: its first python block saved as my_testbed.py,
its first yaml block as my_testbed.yaml, that folder on PYTHONPATH, then `jaxsim sweep`,
`jaxsim analyze` and `jaxsim plot` on the output, each in a fresh process."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).parent.parent / "docs" / "writing-a-testbed.md"


def first_block(text: str, lang: str) -> str:
    return re.search(rf"```{lang}\n(.*?)```", text, re.S).group(1)


def test_the_doc_testbed_sweeps_analyses_and_plots(tmp_path):
    text = DOC.read_text()
    (tmp_path / "my_testbed.py").write_text(first_block(text, "python"))
    (tmp_path / "my_testbed.yaml").write_text(first_block(text, "yaml"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]))

    def jaxsim(*args):
        done = subprocess.run([sys.executable, "-m", "jaxsim", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    jaxsim("sweep", "my_testbed.yaml", "--out", "out", "--no-progress")
    out = tmp_path / "out"
    jaxsim("analyze", "out")
    doc = json.loads((out / "analysis.json").read_text())
    assert len(doc["runs"]) == 4
    for run in doc["runs"]:
        assert len(run["test_accuracy"]) == len(run["steps"]) >= 2
        assert all(0.0 <= a <= 1.0 for a in run["test_accuracy"])
    figure = out / "figures" / "accuracy.png"
    figure.unlink()
    jaxsim("plot", "out")
    assert figure.stat().st_size > 1000
    # the testbed's keys are validated like a built-in testbed's
    bad = subprocess.run([sys.executable, "-m", "jaxsim", "sweep", "my_testbed.yaml",
                          "task.train_fraq=0.5", "--out", "bad"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "did you mean 'task.train_frac'" in bad.stderr
    keys = jaxsim("keys", "my_testbed:TESTBED").stdout
    assert "`task.train_frac`" in keys and "per run" in keys
