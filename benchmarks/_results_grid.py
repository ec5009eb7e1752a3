"""What the results-table scripts share: the (data set, model, seed) grid, resumable runs, and
mean ± std cells.

A script gives :func:`run_grid` its ``run_one(name, dataset, seed, epochs) -> row`` (a dict
with at least ``model``, ``dataset``, ``seed``) and a ``markdown(rows, seeds, epochs)`` writer;
the grid keeps the raw rows in ``benchmarks/results/<name>.json`` and, with ``--merge``, skips
the runs already there (so a long table can be filled in several sittings).
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Callable

import numpy as np

HERE = Path(__file__).resolve().parent


def grid_arguments(parser: argparse.ArgumentParser, models, datasets: str, epochs: int, output: str) -> None:
    """The grid's flags: --datasets, --models, --seeds, --epochs, --output, --merge, --replace."""
    parser.add_argument("--datasets", default=datasets)
    parser.add_argument("--models", default=",".join(models))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--output", default=str(HERE.parent / "docs" / "results" / output))
    parser.add_argument("--merge", action="store_true",
                        help="keep the earlier runs of the JSON file (other models, data sets or seeds) in the table")
    parser.add_argument("--replace", action="store_true",
                        help="with --merge: rerun the given runs that the JSON file already holds, replacing them")


def mean_std(values, digits: int = 4) -> str:
    """``"mean ± std"`` of the finite values with `digits` decimals (one value: itself; none: empty)."""
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


def run_grid(args, raw_name: str, run_one: Callable[[str, str, int, int], dict],
             markdown: Callable[[list, list, int], str], describe: Callable[[dict], str]) -> list:
    """Runs every (data set, model, seed) of `args` not yet in the raw file (with ``--merge``;
    ``--replace`` reruns those too, replacing them), prints one line per run
    (``describe(row)``), and writes the table and the raw rows after every run.

    Returns:
        The rows, ordered by data set and model (the merged file's first, then as given) and seed.
    """
    seeds = [int(s) for s in args.seeds.split(",")]
    datasets, names = args.datasets.split(","), args.models.split(",")
    raw = HERE / "results" / f"{raw_name}.json"
    rows = json.loads(raw.read_text())["rows"] if args.merge and raw.is_file() else []
    done = {(r["model"], r["dataset"], r["seed"]) for r in rows}
    order: dict = {}  # the table's row order: the merged file's rows first, then the new ones as given
    for key in [(r["dataset"], r["model"]) for r in rows] + [(d, m) for d in datasets for m in names]:
        order.setdefault(key, len(order))
    replace = getattr(args, "replace", False)

    def write():
        rows.sort(key=lambda r: (order[(r["dataset"], r["model"])], r["seed"]))
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(markdown(rows, sorted({r["seed"] for r in rows}), args.epochs) + "\n")
        raw.parent.mkdir(parents=True, exist_ok=True)
        raw.write_text(json.dumps({"machine": platform.platform(), "rows": rows}, indent=2, default=float))

    output = Path(args.output)
    for dataset in datasets:
        for name in names:
            for seed in seeds:
                if (name, dataset, seed) in done and not replace:
                    continue
                row = run_one(name, dataset, seed, args.epochs)
                rows[:] = [r for r in rows if (r["model"], r["dataset"], r["seed"]) != (name, dataset, seed)] + [row]
                print(f"{dataset:<15} {name:<20} seed {seed}: {describe(row)}", flush=True)
                write()  # after every run: a long grid that stops early keeps what it measured
    write()
    print(f"wrote {output} and {raw}")
    return rows
