"""The output directory of a post-hoc study of a saved sweep (`jaxsim steer`, `jaxsim edit`):
the study's own config file first (it marks the directory as the study's, so an interrupted
study reruns into it and its results are replaced), then a csv of records and an npz of arrays,
each written atomically."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import yaml

from jaxsim import config as cfglib
from jaxsim.results.files import CONFIG, RUNS, atomic_write, check_writable, is_empty, make_output_dir


def source_config(source: Path, command: str) -> cfglib.Config:
    """The resolved config of the trained sweep `source` (one line if it is not one)."""
    for name in (CONFIG, RUNS):
        if not (source / name).is_file():
            raise cfglib.ConfigError(f"'{source}' is not a jaxsim results directory (no {name}); "
                                     f"jaxsim {command} reads a trained sweep")
    return cfglib.load(source / CONFIG)


def prepare_out(out: Path, config_file: str, what: str) -> None:
    """A new or empty directory, or one of the same study's (holding `config_file`)."""
    if out.is_dir() and not is_empty(out) and not (out / config_file).is_file():
        raise cfglib.ConfigError(f"--out '{out}' is not empty and holds no {what} results; "
                                 f"choose an empty or new directory")
    make_output_dir(out)
    check_writable(out)


def write_config(out: Path, config_file: str, doc: dict) -> None:
    atomic_write(out / config_file, lambda p: p.write_text(yaml.safe_dump(doc, sort_keys=False)))


def write_records(path: Path, records: list[dict]) -> None:
    """A csv with one row per record (the first record's keys as its header)."""
    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)
    atomic_write(path, write)


def write_arrays(path: Path, arrays: dict) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:
            np.savez(f, **arrays)
    atomic_write(path, write)
