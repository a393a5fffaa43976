"""`jaxsim sweep | resume | plot`: thin argument parsing; no science here.

Bad input (config keys, values, directories) exits with code 2 and one line naming the problem.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jaxsim.config import ConfigError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxsim", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    sweep = sub.add_parser("sweep", help="train every run of a config's grid into a results dir")
    sweep.add_argument("config", help="YAML config file")
    sweep.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                       help="override any field, value parsed as YAML (train.steps=500, "
                            "sweep.axes.task.num_chains=[4,64], sweep.axes={})")
    sweep.add_argument("--out", help="results directory (default: results/<config name>)")
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar")
    resume = sub.add_parser("resume", help="continue an interrupted sweep from its checkpoints")
    resume.add_argument("dir")
    resume.add_argument("--no-progress", action="store_true")
    analyze = sub.add_parser("analyze", help="compare saved checkpoints with the four ICL "
                                                 "algorithms; writes DIR/analysis.json")
    analyze.add_argument("dir")
    analyze.add_argument("--sequences", type=int, default=64,
                         help="analysis sequences per run and split (default 64)")
    analyze.add_argument("--context-lengths", help="comma-separated context lengths "
                                                   "(default: ~12 log-spaced up to the trained context)")
    plot = sub.add_parser("plot", help="draw the figures of a results directory")
    plot.add_argument("dir")
    plot.add_argument("--num-chains", type=int, help="task diversity N of the distance curves "
                                                     "(default: the middle value)")
    return p


def _plot(out: Path, num_chains: int | None = None) -> None:
    from jaxsim.plotting import figures
    for path in figures.draw_all(out, num_chains):
        print(f"jaxsim: wrote {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "sweep":
            from jaxsim import config, sweeps
            cfg = config.load(args.config, args.overrides)
            out = Path(args.out) if args.out else Path("results") / Path(args.config).stem
            sweeps.start(cfg, out, progress=not args.no_progress)
            if cfg.sweep.plot:
                _plot(out)
        elif args.command == "resume":
            from jaxsim import config, sweeps
            out = sweeps.resume(Path(args.dir), progress=not args.no_progress)
            if config.load(out / "config.yaml").sweep.plot:
                _plot(out)
        elif args.command == "analyze":
            from jaxsim.analysis import report
            lengths = None
            if args.context_lengths:
                try:
                    lengths = sorted({int(v) for v in args.context_lengths.split(",")})
                except ValueError:
                    raise ConfigError(f"--context-lengths must be comma-separated integers, "
                                      f"got {args.context_lengths!r}") from None
            if args.sequences < 1:
                raise ConfigError(f"--sequences must be >= 1, got {args.sequences}")
            print(f"jaxsim: wrote {report.analyze(Path(args.dir), args.sequences, lengths)}",
                  file=sys.stderr)
        elif args.command == "plot":
            out = Path(args.dir)
            if not (out / "metrics.npz").is_file():
                raise ConfigError(f"'{out}' has no metrics.npz; finish the sweep first "
                                  f"(`jaxsim resume {out}`)")
            _plot(out, args.num_chains)
    except ConfigError as e:
        print(f"jaxsim: error: {e}", file=sys.stderr)
        return 2
    return 0
