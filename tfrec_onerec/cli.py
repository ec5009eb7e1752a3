"""The `tfrec-onerec` command line: models, data, train, evaluate, demo."""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import tfrec_onerec  # noqa: F401  (environment first)


# -- helpers shared by subcommands ------------------------------------------------------------
def _sample_config(args):
    """The data set's default sample settings, with the options given on the command line."""
    from tfrec_onerec import data

    given = {"max_len": args.max_len, "num_negatives": args.negatives, "eval_negatives": args.eval_negatives,
             "split": args.split, "seed": args.seed}
    return dataclasses.replace(data.get(args.dataset).default_config,
                               **{k: v for k, v in given.items() if v is not None})


def _prepared(args, config):
    from tfrec_onerec import data

    if args.data_dir:
        return data.load_prepared(args.data_dir)
    return data.prepare_cached(args.dataset, config, args.data_path)


def _add_sample_arguments(parser):
    parser.add_argument("--max-len", type=int, help="history length kept (default 50)")
    parser.add_argument("--split", choices=("leave-one-out", "temporal"),
                        help="default: leave-one-out for movielens-100k, temporal for simulator")
    parser.add_argument("--negatives", type=int,
                        help="sampled negatives per training positive (default 1; 0 for simulator)")
    parser.add_argument("--eval-negatives", type=int,
                        help="sampled negatives per validation/test positive (default 4; 0 for simulator)")
    parser.add_argument("--seed", type=int, help="seed of sampling and training (default 0)")
    parser.add_argument("--data-path", default=None,
                        help="offline copy of the source data (MovieLens: the recbole wheel or its folder)")


def _check_choice(value: str, valid: list, what: str):
    if value not in valid:
        raise SystemExit(f"tfrec-onerec: unknown {what} {value!r}; valid {what}s: {', '.join(valid)}")


# -- subcommands ------------------------------------------------------------------------------
def cmd_models(args):
    from tfrec_onerec import models

    for name in models.list():
        doc = (models.get(name).__doc__ or "").strip().splitlines()[0]
        print(f"{name:<12} {doc}")


def cmd_data_prepare(args):
    from tfrec_onerec import data

    _check_choice(args.dataset, data.names(), "dataset")
    prepared = data.prepare(args.dataset, Path(args.out), _sample_config(args), args.data_path)
    print(json.dumps(prepared.metadata["examples"]))
    print(f"Prepared {args.dataset} in {prepared.directory}")


def cmd_train(args):
    import keras

    from tfrec_onerec import data, evaluation, models, training
    from tfrec_onerec.export import export_saved_model

    _check_choice(args.model, models.list(), "model")
    _check_choice(args.dataset, data.names(), "dataset")
    config = _sample_config(args)
    keras.utils.set_random_seed(config.seed)
    prepared = _prepared(args, config)
    tasks = args.task or list(data.get(args.dataset).default_tasks)
    hyperparameters = json.loads(args.hparams) if args.hparams else {}
    model_class = models.get(args.model)
    strategy = None
    if args.strategy == "mirrored":
        import tensorflow as tf
        strategy = tf.distribute.MirroredStrategy()

    train_config = training.TrainConfig(epochs=args.epochs, learning_rate=args.learning_rate,
                                        early_stopping_patience=args.patience, checkpoint_dir=args.checkpoint_dir,
                                        jit_compile=args.jit_compile,
                                        verbose="auto" if args.verbose is None else args.verbose)
    model, history = training.fit(
        lambda: model_class(prepared.spec, tasks, **hyperparameters),
        prepared.dataset("train", batch_size=args.batch_size, shuffle=True, seed=config.seed),
        prepared.dataset("valid", batch_size=4096), train_config, strategy)
    results = evaluation.evaluate(model, prepared.dataset("test", batch_size=4096))
    print(f"\nTest metrics of {args.model} on {args.dataset} ({prepared.metadata['samples']['split']}):")
    print(evaluation.format_results(results))
    if args.metrics_out:
        Path(args.metrics_out).write_text(json.dumps(
            {"model": args.model, "dataset": args.dataset, "test": results, "history": history.history}, indent=2))
    if args.export:
        path = export_saved_model(model, args.export, model_name=args.model)
        print(f"Exported SavedModel to {path}")
    return model, results


def cmd_evaluate(args):
    from tfrec_onerec import data, evaluation

    _check_choice(args.dataset, data.names(), "dataset")
    prepared = _prepared(args, _sample_config(args))
    results = evaluation.evaluate_saved_model(args.model_dir, prepared.dataset("test", batch_size=1024))
    print(evaluation.format_results(results))
    return results


def cmd_demo(args):
    from tfrec_onerec.demo import run_demo

    run_demo(epochs=args.epochs, export_dir=args.export, num_users=args.users, top_k=args.top_k)


# -- parser -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfrec-onerec", description="The tfrec_onerec model zoo.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list the registered models")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("data", help="prepare data sets")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    p = data_sub.add_parser("prepare", help="write a data set as TFRecord splits with its spec")
    p.add_argument("--dataset", required=True, help="movielens-100k or simulator")
    p.add_argument("--out", required=True, help="output directory")
    _add_sample_arguments(p)
    p.set_defaults(func=cmd_data_prepare)

    p = sub.add_parser("train", help="train a model with model.fit, print test metrics, export")
    p.add_argument("--model", required=True, help="a registered model name (see `tfrec-onerec models`)")
    p.add_argument("--dataset", required=True, help="movielens-100k or simulator")
    p.add_argument("--data-dir", help="a prepared data set (default: prepared on the fly and cached)")
    p.add_argument("--task", action="append", help="task (label) to train on; repeatable (default: click)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--patience", type=int, default=2, help="early-stopping patience in epochs")
    p.add_argument("--hparams", help='model hyperparameters as JSON, e.g. \'{"activation": "dice"}\'')
    p.add_argument("--checkpoint-dir", help="best weights and resumable state go here")
    p.add_argument("--strategy", choices=("none", "mirrored"), default="none")
    p.add_argument("--jit-compile", action="store_true", help="compile the train step with XLA")
    p.add_argument("--export", help="export a SavedModel under this directory (TF Serving layout)")
    p.add_argument("--metrics-out", help="write test metrics and the training history as JSON")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2),
                   help="0 silent, 1 progress bar, 2 a line per epoch (default: 1 on a terminal, else 2)")
    _add_sample_arguments(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate an exported SavedModel on a data set's test split")
    p.add_argument("--model-dir", required=True, help="an export directory (its latest version) or a version")
    p.add_argument("--dataset", required=True)
    p.add_argument("--data-dir")
    _add_sample_arguments(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("demo", help="MovieLens-100K: train DIN briefly, export, recommend movies")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--export", default="saved_models/din")
    p.add_argument("--users", type=int, default=3)
    p.add_argument("--top-k", type=int, default=5)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    main()
