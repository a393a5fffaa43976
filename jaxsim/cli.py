"""`jaxsim sweep | resume | merge | analyze | steer | edit | plot | summary | keys`: thin
argument parsing; no science here.

Bad input (config keys, values, directories) exits with code 2 and one line naming the problem.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jaxsim
from jaxsim import api, logs
from jaxsim.api import use_every_core  # noqa: F401 (kept importable as jaxsim.cli.use_every_core)
from jaxsim.config import ConfigError


DESCRIPTION = ("Train a whole phase-diagram sweep of small models (transformers, sparse "
               "autoencoders, MLPs) on a testbed task as one compiled JAX program, from one YAML "
               "config; then analyze the saved checkpoints and plot the figures.")
DIR_HELP = "a results directory written by `jaxsim sweep`"


def _verbosity() -> argparse.ArgumentParser:
    """-q/--quiet and -v/--verbose, before or after the command (`jaxsim -q sweep ...` or
    `jaxsim sweep ... -q`)."""
    p = argparse.ArgumentParser(add_help=False)
    group = p.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=logs.QUIET,
                       default=argparse.SUPPRESS, help="only warnings, errors and the lines "
                       "naming what was written (no progress bar)")
    group.add_argument("-v", "--verbose", dest="verbosity", action="store_const",
                       const=logs.VERBOSE, default=argparse.SUPPRESS,
                       help="also debug lines (each chunk's compile, restore, saves and time)")
    return p


def _compile_cache() -> argparse.ArgumentParser:
    """--compile-cache DIR|off, before or after the command (docs/sweeps.md)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--compile-cache", metavar="DIR|off", default=argparse.SUPPRESS,
                   help="the persistent compilation cache's directory, or 'off' (default: "
                        "$JAXSIM_CACHE_DIR, else ~/.cache/jaxsim/xla): a second run with the "
                        "same shapes loads its compiled programs instead of compiling them")
    return p


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxsim", description=DESCRIPTION,
                                parents=[_verbosity(), _compile_cache()],
                                epilog="Run `jaxsim COMMAND --help` for a command's options; "
                                       "`jaxsim keys` lists every config key.")
    p.add_argument("--version", action="version", version=f"jaxsim {jaxsim.__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    both = [_verbosity(), _compile_cache()]
    sweep = sub.add_parser("sweep", parents=both,
                           help="train every run of a config's grid into a results dir")
    sweep.add_argument("config", help="YAML config file")
    sweep.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                       help="override any field, value parsed as YAML (train.steps=500, "
                            "sweep.axes.task.num_chains=[4,64], sweep.axes={})")
    sweep.add_argument("--out", help="results directory (default: results/<config name>)")
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar")
    sweep.add_argument("--dry-run", action="store_true",
                       help="print the plan (runs, shape groups, chunks, each group's compiled "
                            "peak memory per device, compile count) and write nothing")
    sweep.add_argument("--shard", metavar="I/N",
                       help="train only shard I of N (0 <= I < N): a deterministic slice of whole "
                            "chunks, into its own dir (default results/<config name>_shards/"
                            "shard_III_of_NNN); combine the N with `jaxsim merge`")
    sweep.add_argument("--slurm", metavar="KEY=VALUE,...",
                       help="submit --shards N shard jobs as a Slurm job array through submitit "
                            "(pip install 'jaxsim[slurm]'), then a merge job into --out that "
                            "depends on them; pairs are submitit/sbatch parameters, e.g. "
                            "partition=gpu,time=60,gpus_per_node=1; cluster=local runs them here")
    sweep.add_argument("--distributed", nargs="?", const="auto", metavar="HOST:PORT,N,I",
                       help="one sweep over the devices of several processes/hosts "
                            "(jax.distributed.initialize): run the same command in every "
                            "process, same --out on a shared filesystem; bare = auto-detect "
                            "(Slurm, Open MPI), or coordinator,num_processes,process_id")
    sweep.add_argument("--shards", type=int, metavar="N", help="number of shards (with --slurm)")
    sweep.add_argument("--no-merge", action="store_true",
                       help="with --slurm: no merge job (run `jaxsim merge` yourself)")
    resume = sub.add_parser("resume", parents=both, help="continue an interrupted sweep (or "
                                                         "shard) from its checkpoints")
    resume.add_argument("dir", metavar="DIR", help=f"{DIR_HELP} (or by `jaxsim sweep --shard`) "
                        "whose sweep was interrupted")
    resume.add_argument("--no-progress", action="store_true", help="no progress bar")
    resume.add_argument("--distributed", nargs="?", const="auto", metavar="HOST:PORT,N,I",
                        help="resume a multi-host sweep (as for sweep)")
    merge = sub.add_parser("merge", parents=both,
                           help="combine finished shard dirs into one results dir equal to a "
                                "single-process sweep's (shards are only read)")
    merge.add_argument("dirs", nargs="+", metavar="DIR",
                       help="shard directories, or a folder holding them (<out>_shards)")
    merge.add_argument("--out", help="merged results directory, new or empty (default: <out> "
                                     "when the shards sit in <out>_shards)")
    merge.add_argument("--copy", action="store_true",
                       help="copy checkpoint files (default: hard links where possible)")
    analyze = sub.add_parser("analyze", parents=both,
                             help="the testbed's analysis of every saved checkpoint of every "
                                  "run; writes DIR/analysis.json",
                             description="Run the testbed's analysis (named by task.name in "
                                         "DIR/config.yaml) on every saved checkpoint of every "
                                         "run; writes DIR/analysis.json.")
    analyze.add_argument("dir", metavar="DIR", help=DIR_HELP)
    analyze.add_argument("--sequences", type=int, default=64,
                         help="analysis sequences per run and split (default 64)")
    analyze.add_argument("--context-lengths", help="comma-separated context lengths "
                                                   "(default: ~12 log-spaced up to the trained context)")
    summary = sub.add_parser("summary", parents=both,
                             help="print a results dir's final results per axis value (mean ± "
                                  "std over seeds; summary.csv), or two dirs side by side",
                             description="Print the final results of DIR per axis value, as "
                                         "the sweep and analyze print them (summary.csv); with "
                                         "OTHER, both sweeps side by side and their difference.")
    summary.add_argument("dir", metavar="DIR", help=DIR_HELP)
    summary.add_argument("other", metavar="OTHER", nargs="?",
                         help="a second results directory to compare with (B - A)")
    keys = sub.add_parser("keys", parents=both,
                          help="print every config key (type, default, allowed values, doc) as "
                               "Markdown: docs/config.md is its output")
    keys.add_argument("testbed", nargs="?", help="only this testbed's task keys (a built-in "
                                                 "name or MODULE:OBJECT)")
    steer = sub.add_parser("steer", parents=both,
                           help="promote and suppress a behaviour in every run of a trained gpt "
                                "sweep by steering (CAA, ITI, SAE latents, random directions), "
                                "measured by likelihoods; writes steering.csv and figures",
                           description="Steer the runs of DIR (a trained gpt sweep) as the "
                                       "steering CONFIG says (docs/steering.md).")
    steer.add_argument("dir", metavar="DIR", help=f"{DIR_HELP} (a gpt on a testbed with "
                       "behaviours: markov_mixture, pcfg); only read")
    steer.add_argument("config", help="steering YAML config (a `steer` section; e.g. "
                                      "configs/steer_markov.yaml)")
    steer.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                       help="override a steering key (steer.layers=[1], steer.multipliers=[1,4])")
    steer.add_argument("--out", help="output directory (default: results/<config name>)")
    edit = sub.add_parser("edit", parents=both,
                          help="edit facts of every run of a trained knowledge_graph gpt sweep "
                               "(ROME, MEMIT, fine-tuning, AlphaEdit) and measure efficacy, "
                               "untouched facts and shattering; writes edits.csv and figures",
                          description="Edit the runs of DIR (a trained knowledge_graph gpt "
                                      "sweep) as the editing CONFIG says (docs/editing.md).")
    edit.add_argument("dir", metavar="DIR", help=f"{DIR_HELP} (a gpt on knowledge_graph); only "
                      "read")
    edit.add_argument("config", help="editing YAML config (an `edit` section; e.g. "
                                     "configs/knowledge_edit.yaml)")
    edit.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                      help="override an editing key (edit.methods=[rome], edit.num_edits=64)")
    edit.add_argument("--out", help="output directory (default: results/<config name>)")
    plot = sub.add_parser("plot", parents=both, help="draw the figures of a results directory "
                                                     "(a sweep's, a steering or an edit study's)")
    plot.add_argument("dir", metavar="DIR", help=f"{DIR_HELP} (figures go to DIR/figures)")
    plot.add_argument("--num-chains", type=int, help="task diversity N of the distance curves "
                                                     "(default: the middle value)")
    return p


def _plot(out: Path, num_chains: int | None = None) -> None:
    for path in api.plot(out, num_chains):
        logs.RESULT.info(f"jaxsim: wrote {path}")


def _sweep(args) -> None:
    from jaxsim import config, sweeps
    from jaxsim.sweeps import shards
    if args.shard and args.slurm:
        raise ConfigError("--shard and --slurm exclude each other (--slurm submits every shard)")
    if (args.shards is not None or args.no_merge) and not args.slurm:
        raise ConfigError("--shards and --no-merge go with --slurm (one shard: --shard I/N)")
    if args.distributed and (args.slurm or args.shard):
        raise ConfigError("--distributed is one sweep over many processes; it excludes "
                          "--shard and --slurm")
    cfg = config.load(args.config, args.overrides)
    out = Path(args.out) if args.out else Path("results") / Path(args.config).stem
    if args.dry_run:
        if args.slurm or args.shard or args.distributed:
            raise ConfigError("--dry-run prints the whole plan; drop --shard/--slurm/--distributed")
        for line in sweeps.dry_run(cfg, out):
            logs.RESULT.info(f"jaxsim: {line}")
        return
    if args.distributed:
        from jaxsim.sweeps import distributed
        distributed.initialize(args.distributed)
    if args.slurm:
        from jaxsim.sweeps import slurm
        if args.shards is None:
            raise ConfigError("--slurm needs --shards N (the number of array tasks)")
        jobs = slurm.submit(cfg, out, args.shards, slurm.parse_params(args.slurm),
                            merge=not args.no_merge)
        logs.RESULT.info(f"jaxsim: submitted {len(jobs)} job(s): "
                         f"{', '.join(str(j.job_id) for j in jobs)}")
        return
    if args.shard:
        shard = shards.parse(args.shard)
        out = Path(args.out) if args.out else shards.shard_dir(out, shard.index, shard.count)
        sweeps.start(cfg, out, progress=_progress(args), shard=shard)
        return
    api.sweep(cfg, out=out, progress=_progress(args))


def _summary(directory: str, other: str | None) -> None:
    """`jaxsim summary DIR [OTHER]`: the table on stdout (it is the command's output)."""
    from jaxsim import summaries
    table = api.summary(directory)
    if other is None:
        heading = summaries.title(table, f"of {directory}")
        sys.stdout.write(summaries.render(table, heading) + "\n")
    else:
        sys.stdout.write(summaries.render_comparison(table, api.summary(other), directory, other)
                         + "\n")


def _progress(args) -> bool:
    return not args.no_progress and getattr(args, "verbosity", logs.DEFAULT) != logs.QUIET


def _merge_out(args) -> Path:
    """--out, or <out> when every given path is (or sits in) one <out>_shards folder."""
    if args.out:
        return Path(args.out)
    holders = {(Path(d).absolute().parent if Path(d, "shard.json").is_file()
                else Path(d).absolute()) for d in args.dirs}
    holder = holders.pop() if len(holders) == 1 else None
    if holder is None or not holder.name.endswith("_shards"):
        raise ConfigError("merge needs --out (the shards do not sit in one <out>_shards folder)")
    return holder.parent / holder.name[:-len("_shards")]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure(getattr(args, "verbosity", logs.DEFAULT))
    api.setup_jax(getattr(args, "compile_cache", None))
    try:
        if args.command == "sweep":
            _sweep(args)
        elif args.command == "merge":
            from jaxsim import config
            from jaxsim.sweeps import merge
            dirs = merge.expand_dirs([Path(d) for d in args.dirs])
            out = merge.merge(dirs, _merge_out(args), copy=args.copy)
            logs.RESULT.info(f"jaxsim: merged {len(dirs)} shard(s) into {out}")
            if config.load(out / "config.yaml").sweep.plot:
                _plot(out)
        elif args.command == "resume":
            if args.distributed:
                from jaxsim.sweeps import distributed
                distributed.initialize(args.distributed)
            api.resume(args.dir, progress=_progress(args))
        elif args.command == "analyze":
            lengths = None
            if args.context_lengths:
                try:
                    lengths = sorted({int(v) for v in args.context_lengths.split(",")})
                except ValueError:
                    raise ConfigError(f"--context-lengths must be comma-separated integers, "
                                      f"got {args.context_lengths!r}") from None
            if args.sequences < 1:
                raise ConfigError(f"--sequences must be >= 1, got {args.sequences}")
            done = api.analyze(args.dir, args.sequences, lengths)
            logs.RESULT.info(f"jaxsim: wrote {done.dir / 'analysis.json'}")
        elif args.command == "summary":
            _summary(args.dir, args.other)
        elif args.command == "keys":
            from jaxsim.config import reference
            sys.stdout.write(reference.render(args.testbed))
        elif args.command == "steer":
            out = api.steer(args.dir, args.config, args.overrides, out=args.out)
            logs.RESULT.info(f"jaxsim: wrote {out / 'steering.csv'}")
        elif args.command == "edit":
            out = api.edit(args.dir, args.config, args.overrides, out=args.out)
            logs.RESULT.info(f"jaxsim: wrote {out / 'edits.csv'}")
        elif args.command == "plot":
            _plot(Path(args.dir), args.num_chains)
    except ConfigError as e:
        logs.LOG.error(f"jaxsim: error: {e}")
        return 2
    return 0
