"""Log levels: `--quiet` keeps warnings, errors and the lines naming what was written;
`--verbose` adds debug lines; the default is unchanged; importing jaxsim configures no logging."""
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import tiny_raw

from jaxsim import cli

ROOT = Path(__file__).resolve().parents[1]


def _lines(capsys) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_quiet_keeps_the_result_lines_and_verbose_adds_debug_lines(tmp_path, capsys):
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(tiny_raw(sweep={"plot": True})))
    config = str(tmp_path / "t.yaml")
    # verbose first: it compiles (the later sweeps reuse the program: no "compiled in" line)
    assert cli.main(["sweep", config, "--out", str(tmp_path / "verbose"), "--no-progress",
                     "--verbose"]) == 0
    verbose = _lines(capsys)
    assert cli.main(["-q", "sweep", config, "--out", str(tmp_path / "quiet")]) == 0   # bar too
    quiet = _lines(capsys)
    assert cli.main(["sweep", config, "--out", str(tmp_path / "default"), "--no-progress"]) == 0
    default = _lines(capsys)

    assert len(quiet) == 2, quiet
    assert quiet[0].startswith("jaxsim: done in") and quiet[0].endswith(
        f"; results in {tmp_path / 'quiet'}")
    assert quiet[1] == f"jaxsim: wrote {tmp_path / 'quiet' / 'figures' / 'loss_curves.png'}"

    def kinds(lines):   # a line without its numbers and paths
        return [" ".join(w for w in line.split()[:3] if not any(c.isdigit() for c in w))
                for line in lines]
    assert [line.startswith("[group 0 chunk_000] step ") for line in default].count(True) == 2
    assert kinds(default) == [k for k in kinds(verbose) if k in kinds(default)]
    extra = [line for line in verbose if kinds([line])[0] not in kinds(default)]
    assert any(line.startswith("jaxsim: saving ") and "step_00000010 (async)" in line
               for line in extra), verbose
    assert any("1 runs trained from step 0 to 20 in" in line for line in extra), verbose

    assert cli.main(["analyze", str(tmp_path / "quiet"), "--sequences", "2", "-q"]) == 0
    assert _lines(capsys) == [f"jaxsim: wrote {tmp_path / 'quiet' / 'analysis.json'}"]
    assert cli.main(["-q", "resume", str(tmp_path / "nowhere")]) == 2     # errors stay
    assert _lines(capsys) == [f"jaxsim: error: results directory '{tmp_path / 'nowhere'}' "
                              f"does not exist"]


def test_importing_jaxsim_configures_no_logging():
    code = ("import logging, jaxsim, jaxsim.cli, jaxsim.api, jaxsim.logs; "
            "assert not logging.root.handlers and not logging.getLogger('jaxsim').handlers; "
            "assert logging.getLogger('jaxsim').level == logging.NOTSET")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
