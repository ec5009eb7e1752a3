"""WatchTimeMARL's results: sessions' cumulative watch time in the simulator environment,
against its own myopic head, SessionLTV and the logging policy.

Each seed is a world and its log (the session-value family's data with that ``seed``:
:mod:`tfrec_onerec.data.session_steps`), one model trained on the log (``family.fit``,
``--epochs`` epochs, the model's defaults), then played: every user of the world (3,000) plays
one new session under each policy (:mod:`tfrec_onerec.families.session_value`); the rows are
the ``test`` plays (their own environment seed). SessionLTV is trained on the same log, with its
long-term weight chosen on the ``valid`` plays among :data:`SESSION_LTV_WEIGHTS` as in
``benchmarks/session_ltv_results.py``. WatchTimeMARL's hyperparameters were fixed before any
test play, so every row is leak-free: the one choice made on data, the actors' ``temperature``
(1), came from seed 0's validation plays (mean return 80.5 s at 0.1, 91.8 at 1, 87.1 at 3, and
86.1 at 1 with ``uncertainty_weight`` -1; the myopic head 73.4, the logging policy 53.8).

Rows (``--models``):

* ``watchtime_marl``: the paper's model (main agent plus click, like and follow agents,
  attentive collaboration, the user model answering 4 unshown items per logged step);
* ``without_user_model``: no imagined rows (``imagined_samples=0``): the critics learn from
  the logged items only (the sample selection bias the paper's model-based part addresses);
* ``single_agent``: the main agent alone (``aspects=[]``): no auxiliary agents to collaborate with;
* ``session_ltv``: SessionLTV, the zoo's other session-value model.

Writes ``docs/results/watchtime_marl.md`` and the raw figures to
``benchmarks/results/watchtime_marl_results.json``.

Usage::

    python benchmarks/watchtime_marl_results.py [--models watchtime_marl,session_ltv,without_user_model,single_agent] [--seeds 0,1,2] [--epochs 5] [--merge]
"""
from __future__ import annotations

import argparse
import time

import tfrec_onerec  # noqa: F401  (sets the process environment before TensorFlow is imported)

from tfrec_onerec import families

from _results_grid import grid_arguments, mean_std, run_grid

VARIANTS = {"watchtime_marl": ("watchtime_marl", {}),
            "without_user_model": ("watchtime_marl", {"imagined_samples": 0}),
            "single_agent": ("watchtime_marl", {"aspects": []}),
            "session_ltv": ("session_ltv", {})}
SESSION_LTV_WEIGHTS = (0.0, 1.0, 1.5, 2.0)
BASELINES = ("logging", "oracle_myopic", "oracle_long_term", "random")
LABELS = {"watchtime_marl": "WatchTimeMARL", "without_user_model": "WatchTimeMARL without the user model",
          "single_agent": "WatchTimeMARL, main agent alone", "session_ltv": "SessionLTV (weight chosen on valid)"}


def run_one(name: str, dataset: str, seed: int, epochs: int) -> dict:
    family = families.get("session_value")
    model_name, hyperparameters = VARIANTS[name]
    data = family.prepare(dataset, {"seed": seed})
    config = family.train_config(family.model_class(model_name), {"epochs": epochs, "seed": seed, "verbose": 0})
    start = time.perf_counter()
    model = family.fit(model_name, data, config, hyperparameters).model
    seconds = time.perf_counter() - start
    chosen = None
    if model_name == "session_ltv":
        valid = {}
        for weight in SESSION_LTV_WEIGHTS:
            model.long_term_weight = weight
            valid[weight] = family.evaluate(model, data, "valid")["policies"]["model"]["return"]
        chosen = max(valid, key=valid.get)
        model.long_term_weight = chosen
    policies = family.evaluate(model, data, "test")["policies"]
    return {"model": name, "dataset": dataset, "seed": seed, "seconds": seconds, "steps": data.metadata["steps"]["train"],
            "chosen_weight": chosen, "policies": policies}


def markdown(rows: list, seeds: list, epochs: int) -> str:
    lines = ["# WatchTimeMARL: sessions played in the simulator", "",
             f"Written by `benchmarks/watchtime_marl_results.py` (seeds {', '.join(map(str, seeds))}: a world and its "
             f"log each; {epochs} epochs; mean ± standard deviation over the seeds). Every user of the world (3,000) "
             "plays one new session per policy in the environment with popular items costing sessions "
             "(`exit_popularity` 1); the return is the session's cumulative watch time (seconds), on the test "
             "plays. A model's myopic head is its immediate-reward ranker (WatchTimeMARL: the user model's "
             "watch time; SessionLTV: its reward head).", "",
             "| policy | return (watch s) | length | clicks | training s |", "|---|---|---|---|---|"]

    def row(label, results, seconds=None):
        cells = [mean_std([r[k] for r in results], 2) for k in ("return", "length", "clicks")]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {mean_std(seconds, 0) if seconds else ''} |")

    names = list(dict.fromkeys(r["model"] for r in rows))

    def label(name):  # a row measured on fewer seeds than the table says so
        runs = [r["seed"] for r in rows if r["model"] == name]
        return LABELS.get(name, name) + (f" (seed {', '.join(map(str, runs))} only)" if len(runs) < len(seeds) else "")

    for name in names:
        runs = [r for r in rows if r["model"] == name]
        row(label(name), [r["policies"]["model"] for r in runs], [r["seconds"] for r in runs])
    for name in names:
        runs = [r for r in rows if r["model"] == name]
        row(f"{label(name)}: myopic head", [r["policies"]["model_myopic"] for r in runs])
    first = [r for r in rows if r["model"] == names[0]]
    for baseline in BASELINES:
        row(baseline.replace("_", " "), [r["policies"][baseline] for r in first])
    lines.append("")
    for name in names:
        runs = [r for r in rows if r["model"] == name]
        gains = [r["policies"]["model"]["return"] / r["policies"]["model_myopic"]["return"] for r in runs]
        over_logging = [r["policies"]["model"]["return"] / r["policies"]["logging"]["return"] for r in runs]
        chosen = [r["chosen_weight"] for r in runs if r["chosen_weight"] is not None]
        lines.append(f"- {label(name)}: x{mean_std(gains, 3)} over its myopic head, "
                     f"x{mean_std(over_logging, 3)} over the logging policy"
                     + (f"; chosen long-term weight per seed: {', '.join(map(str, chosen))}" if chosen else "") + ".")
    return "\n".join(lines)


def describe(row: dict) -> str:
    p = row["policies"]
    return (f"{row['seconds']:.0f} s: return {p['model']['return']:.1f} (myopic head {p['model_myopic']['return']:.1f}, "
            f"logging {p['logging']['return']:.1f})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    grid_arguments(parser, ("watchtime_marl", "session_ltv"), "simulator", 5, "watchtime_marl.md")
    run_grid(parser.parse_args(argv), "watchtime_marl_results", run_one, markdown, describe)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
