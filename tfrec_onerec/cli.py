"""The `tfrec-onerec` command line: models, data, train, evaluate, pipeline, serve, query, demo."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import tfrec_onerec  # noqa: F401  (environment first)
from tfrec_onerec.data import registry as dataset_registry
from tfrec_onerec.data.samples import SPLIT_METHODS


# -- helpers shared by subcommands ------------------------------------------------------------
DATA_FLAGS = ("max_len", "negatives", "eval_negatives", "split", "seed", "session_len", "short_len", "positive_len",
              "simulator_users", "simulator_items")
"""Data options (argument names); each family reads some of them and refuses the others."""
TRAIN_FLAGS = {"epochs": "epochs", "batch_size": "batch_size", "learning_rate": "learning_rate",
               "patience": "early_stopping_patience", "checkpoint_dir": "checkpoint_dir", "strategy": "strategy",
               "jit_compile": "jit_compile", "steps_per_execution": "steps_per_execution", "progress": "verbose",
               "seed": "seed"}
"""Training flags -> :class:`~tfrec_onerec.training.TrainConfig` fields (every family honours them)."""
DATASET_HELP = f"one of {', '.join(dataset_registry.names())} that the model's family reads"


def _given(args, names) -> dict:
    return {name: getattr(args, name, None) for name in names if getattr(args, name, None) is not None}


def _fail(message: str):
    raise SystemExit(f"tfrec-onerec: {message}")


def _family_data(family, args):
    """The family's data: ``--data-dir`` (checked to be this family's), else prepared and cached."""
    from tfrec_onerec.families import UnsupportedOption

    try:
        if getattr(args, "data_dir", None):
            return family.load(args.data_dir)
        return family.prepare(args.dataset, _given(args, DATA_FLAGS), getattr(args, "data_path", None))
    except (UnsupportedOption, KeyError) as error:
        _fail(str(error).strip('"'))


def _add_data_arguments(parser):
    group = parser.add_argument_group("data options (each model family reads some; others are refused)")
    group.add_argument("--max-len", type=int, help="history length kept (default 50)")
    defaults = ", ".join(f"{name}: {dataset_registry.get(name).default_config.split}" for name in dataset_registry.names())
    group.add_argument("--split", choices=SPLIT_METHODS,
                       help=f"pointwise: how samples are split into train/valid/test (defaults: {defaults})")
    group.add_argument("--negatives", type=int,
                       help="pointwise: sampled negatives per training positive (default 1; 0 for simulator)")
    group.add_argument("--eval-negatives", type=int,
                       help="pointwise: sampled negatives per validation/test positive (default 4; 0 for simulator)")
    group.add_argument("--seed", type=int, help="seed of data sampling and training (default 0)")
    group.add_argument("--session-len", type=int,
                       help="generative: items per generated session; session_outcome: items per scored session "
                            "(default 3)")
    group.add_argument("--short-len", type=int, help="generative: short-term pathway length (default 10)")
    group.add_argument("--positive-len", type=int, help="generative: positive-feedback pathway length (default 20)")
    group.add_argument("--simulator-users", type=int, help="simulator (sequence and session data): users (default 3000)")
    group.add_argument("--simulator-items", type=int, help="simulator (sequence and session data): items (default 400)")
    group.add_argument("--data-path", default=None,
                       help="offline copy of the source data (MovieLens: the recbole wheel or its folder)")


def _check_choice(value: str, valid: list, what: str):
    if value not in valid:
        _fail(f"unknown {what} {value!r}; valid {what}s: {', '.join(valid)}")


def _family_of_model(name: str):
    from tfrec_onerec import families, models

    _check_choice(name, models.list(), "model")
    return families.for_model(name)


def _print_tokenizer_report(tokenizer):
    print(f"Semantic IDs: {tokenizer.num_levels} levels + collision digit, vocab sizes {tokenizer.vocab_sizes}")
    for level in tokenizer.report["levels"]:
        print(f"   level {level['level']}: utilisation {level['utilisation']:.3f}, entropy "
              f"{level['entropy_bits']:.2f} bits, collision rate {level['collision_rate']:.3f}, "
              f"reconstruction error {level['reconstruction_error']:.3f}")


def _print_train_info(info: dict):
    if info.get("tokenizer") is not None and info["tokenizer"].report:
        _print_tokenizer_report(info["tokenizer"])
    facts = [f"{info['seconds_per_step'] * 1000:.1f} ms per training step"] if info.get("seconds_per_step") else []
    if info.get("target_tokens_per_second"):
        facts.append(f"{info['target_tokens_per_second']:,.0f} target tokens/s")
    if info.get("expert_load"):
        facts.append("expert load per decoder layer: " + "; ".join(str(load) for load in info["expert_load"]))
    if facts:
        print("Trained: " + ", ".join(facts))


# -- subcommands ------------------------------------------------------------------------------
def cmd_models(args):
    from tfrec_onerec import families, models

    rows = [("model", "family", "data sets", "description")]
    for name in models.list():
        family = families.for_model(name)
        rows.append((name, family.name, ", ".join(family.datasets),
                     (models.get(name).__doc__ or "").strip().splitlines()[0]))
    widths = [max(len(row[column]) for row in rows) + 2 for column in range(3)]
    for row in rows:
        print("".join(cell.ljust(width) for cell, width in zip(row, widths)) + row[3])


def cmd_data_prepare(args):
    from tfrec_onerec import families
    from tfrec_onerec.families import UnsupportedOption

    try:
        family = families.get(args.family)
        data = family.prepare(args.dataset, _given(args, DATA_FLAGS), args.data_path, directory=args.out)
    except (UnsupportedOption, KeyError) as error:
        _fail(str(error).strip('"'))
    print(json.dumps(data.metadata["examples"]))
    print(f"Prepared {args.dataset} for the {family.name} family in {data.side_dir}")


def cmd_train(args):
    """`train`: the model's family prepares the data, builds and fits the model, evaluates it on
    the test split, and exports it (one code path for every registered model)."""
    from tfrec_onerec.families import UnsupportedOption

    family = _family_of_model(args.model)
    try:
        family.check_dataset(args.dataset)
        family.data_config(args.dataset, _given(args, DATA_FLAGS))
        options = family.check_build_options({"tokenizer": args.tokenizer})
        config = family.train_config(family.model_class(args.model),
                                     {field: getattr(args, flag) for flag, field in TRAIN_FLAGS.items()
                                      if getattr(args, flag) is not None})
        if args.task and not family.has_tasks:
            raise UnsupportedOption(f"--task: the {family.name} family's models have no tasks to choose "
                                    "(they own their loss).")
    except (UnsupportedOption, ValueError) as error:
        _fail(str(error))
    data = _family_data(family, args)
    if family.has_tasks:  # the labels are known once the data is: refuse a missing one before training
        try:
            family.tasks(data, args.task, family.model_class(args.model))
        except ValueError as error:
            _fail(str(error))
    hyperparameters = json.loads(args.hparams) if args.hparams else {}
    result = family.fit(args.model, data, config, hyperparameters, args.task, **options)
    _print_train_info(result.info)
    results = family.evaluate(result.model, data, "test")
    print(f"\nTest metrics of {args.model} on {args.dataset} ({family.name} family):")
    print(family.format_results(results))
    if args.metrics_out:
        Path(args.metrics_out).write_text(json.dumps({"model": args.model, "dataset": args.dataset, "test": results,
                                                      "history": result.history.history}, indent=2, default=str))
    if args.export:
        path = family.export(result.model, args.export, data, model_name=args.model)
        print(f"Exported SavedModel to {path}")
    return result.model, results


def cmd_evaluate(args):
    """`evaluate`: an export scored by its family's protocol against the tasks it records."""
    from tfrec_onerec import families
    from tfrec_onerec.export import latest_version

    try:
        info = families.read_export_info(latest_version(args.model_dir))
    except FileNotFoundError as error:
        _fail(str(error))
    family = families.get(info["family"]) if info.get("family") else families.get("pointwise")
    if info.get("dataset") == args.dataset:  # the data options the model was trained with, unless given
        args = argparse.Namespace(**{**vars(args), **{k: v for k, v in (info.get("data_options") or {}).items()
                                                      if getattr(args, k, None) is None and k in DATA_FLAGS}})
    data = _family_data(family, args)
    results = family.evaluate_export(args.model_dir, data, "test")
    print(family.format_results(results))
    return results


def cmd_tokenizer_fit(args):
    from tfrec_onerec.families import generative

    family = generative.FAMILY
    data = _family_data(family, args)
    tokenizer = generative.fit_tokenizer(data.load_side_arrays(generative.ITEM_VECTORS_FILE), args.dataset,
                                         args.levels, args.codes, args.method, args.seed or 0)
    _print_tokenizer_report(tokenizer)
    print(f"Saved the tokenizer to {tokenizer.save(args.out)}")


def _pipeline_config(args):
    """The PipelineConfig of `pipeline run/compile`: data from --data-dir or prepared by the model's family."""
    from tfx_pipelines.pipeline import DIRECT_MULTIPROCESSING, PipelineConfig

    family = _family_of_model(args.model)
    if args.data_dir and not (Path(args.data_dir) / "metadata.json").is_file():
        data_dir = args.data_dir  # CSV files + spec.json (point-wise models; PipelineConfig checks)
    else:
        data_dir = _family_data(family, args).side_dir
    return PipelineConfig(
        model=args.model, data=data_dir, pipeline_root=args.pipeline_root or f"pipelines/{args.model}",
        serving_dir=args.serving_dir, tasks=args.task or None,
        hyperparameters=json.loads(args.hparams) if args.hparams else {},
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate, strategy=args.strategy,
        schema=args.schema, min_value=args.min_value, max_drop=args.max_drop,
        beam_args=args.beam_arg or DIRECT_MULTIPROCESSING, enable_cache=not args.no_cache, seed=args.seed or 0,
        **({"slices": tuple(args.slice)} if args.slice else {}))


def cmd_pipeline_run(args):
    _family_of_model(args.model)  # an unknown model is named before TFX is imported (seconds)
    from tfx_pipelines.runners import run_pipeline

    config = _pipeline_config(args)
    wall = run_pipeline(config, args.runner, verbose=args.verbose)
    from tfrec_onerec.export import versions

    pushed = versions(config.model_serving_dir)
    print(f"Pipeline {config.name} finished in {wall:.1f} s; versions in {config.model_serving_dir}: {pushed}")
    return config


def cmd_pipeline_compile(args):
    _family_of_model(args.model)
    from tfx_pipelines.runners import compile_kubeflow

    config = _pipeline_config(args)
    path = compile_kubeflow(config, args.output, args.image)
    print(f"Wrote the Kubeflow pipeline to {path} (image {args.image})")


def cmd_pipeline_lineage(args):
    from tfrec_onerec.export import join, latest_version
    from tfx_pipelines.lineage import format_lineage, model_lineage

    model_dir = join(args.serving_dir, args.model)  # a local path or a remote URI
    version_dir = join(model_dir, str(args.version)) if args.version else latest_version(model_dir)
    metadata = args.metadata or str(Path(args.pipeline_root or f"pipelines/{args.model}") / "metadata.sqlite")
    print(f"Lineage of {version_dir}:")
    print(format_lineage(model_lineage(metadata, version_dir)))


def cmd_demo(args):
    from tfrec_onerec.demo import run_demo

    run_demo(epochs=args.epochs, serving_dir=args.serving_dir, pipeline_root=args.pipeline_root,
             num_users=args.users, top_k=args.top_k, runner=args.runner, verbose=args.verbose)


# -- parser -----------------------------------------------------------------------------------
def _add_training_arguments(parser, epochs_help: str):
    group = parser.add_argument_group("training (every family honours these; defaults per family and model)")
    group.add_argument("--epochs", type=int, help=epochs_help)
    group.add_argument("--batch-size", type=int, help="examples per batch (default: the family's and the model's)")
    group.add_argument("--learning-rate", type=float, help="Adam's learning rate (default: the family's and the model's)")
    group.add_argument("--hparams", help='model hyperparameters as JSON, e.g. \'{"activation": "dice"}\'')
    group.add_argument("--strategy", choices=("none", "mirrored"), help="tf.distribute strategy (default none)")
    group.add_argument("--task", action="append",
                       help="task (label) to train on; repeatable (families with tasks; default: the data set's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfrec-onerec", description="The tfrec_onerec model zoo.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list the registered models with their families and data sets")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("data", help="prepare data sets")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    p = data_sub.add_parser("prepare", help="write a data set as a family's TFRecord splits with its spec")
    p.add_argument("--dataset", required=True, help=DATASET_HELP)
    p.add_argument("--family", default="pointwise",
                   help="the model family the data is for: pointwise (default), next_item, generative, "
                        "session_outcome")
    p.add_argument("--out", required=True, help="output directory")
    _add_data_arguments(p)
    p.set_defaults(func=cmd_data_prepare)

    p = sub.add_parser("train", help="train any registered model with model.fit, print test metrics, export")
    p.add_argument("--model", required=True, help="a registered model name (see `tfrec-onerec models`)")
    p.add_argument("--dataset", required=True, help=DATASET_HELP)
    p.add_argument("--data-dir", help="a prepared data set of the model's family (default: prepared and cached)")
    _add_training_arguments(p, "passes over the training data (default: the family's and the model's, e.g. sasrec 30)")
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs (default 2)")
    p.add_argument("--checkpoint-dir", help="best weights and resumable state go here")
    p.add_argument("--jit-compile", action="store_true", default=None, help="compile the train step with XLA")
    p.add_argument("--steps-per-execution", type=int,
                   help="training steps per call into the compiled step (default 1)")
    p.add_argument("--export", help="export a SavedModel under this directory (TF Serving layout)")
    p.add_argument("--metrics-out", help="write test metrics and the training history as JSON")
    p.add_argument("--progress", type=int, choices=(0, 1, 2),
                   help="Keras progress: 0 silent, 1 progress bar, 2 a line per epoch (default: 1 on a terminal)")
    p.add_argument("--tokenizer", help="generative: a fitted tokenizer directory (default: fitted here)")
    _add_data_arguments(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate an exported model (any family) on a data set's test split")
    p.add_argument("--model-dir", required=True, help="an export directory (its latest version) or a version")
    p.add_argument("--dataset", required=True)
    p.add_argument("--data-dir")
    _add_data_arguments(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("pipeline", help="TFX pipelines: run locally, compile for Kubeflow, show lineage")
    pipeline_sub = p.add_subparsers(dest="pipeline_command", required=True)
    run = pipeline_sub.add_parser("run", help="run ExampleGen -> ... -> Pusher (DirectRunner)")
    compile_ = pipeline_sub.add_parser("compile", help="compile the pipeline to a Kubeflow Pipelines JSON")
    for q in (run, compile_):
        q.add_argument("--model", required=True, help="a registered model name")
        q.add_argument("--dataset", default="movielens-100k", help=DATASET_HELP + " (prepared, cached)")
        q.add_argument("--data-dir", help="a prepared TFRecord directory or a CSV directory with spec.json")
        q.add_argument("--pipeline-root", help="TFX artifacts and ML Metadata (default pipelines/<model>)")
        q.add_argument("--serving-dir", default="saved_models", help="pushes go to <serving-dir>/<model>/<version>")
        _add_training_arguments(q, "passes over the training data (default 2)")
        q.add_argument("--schema", choices=("derived", "inferred"), default="derived",
                       help="derived from the feature spec (checked against SchemaGen's), or inferred")
        q.add_argument("--min-value", "--min-auc", dest="min_value", type=float,
                       help="blessing threshold on the family's eval metric (pointwise: every task's AUC, "
                            "default 0.6; next_item/generative: Recall@10, 0.02; session_outcome: lowest AUC, 0.55)")
        q.add_argument("--max-drop", "--max-auc-drop", dest="max_drop", type=float, default=0.01,
                       help="largest drop of that metric allowed against the latest blessed model")
        q.add_argument("--beam-arg", action="append",
                       help="a Beam pipeline argument, repeatable (default: DirectRunner, 2 processes)")
        q.add_argument("--no-cache", action="store_true", help="rerun every component")
        q.add_argument("--slice", action="append",
                       help="a feature to slice the Evaluator's metrics by, repeatable (default: gender, age)")
        _add_data_arguments(q)
    run.add_argument("--runner", choices=("local", "beam"), default="beam")
    run.set_defaults(func=cmd_pipeline_run)
    compile_.add_argument("--target", choices=("kubeflow",), default="kubeflow")
    compile_.add_argument("--output", required=True, help="the pipeline JSON to write")
    compile_.add_argument("--image", default="tfrec-onerec:latest",
                          help="container image of the components (with tfrec_onerec installed)")
    compile_.set_defaults(func=cmd_pipeline_compile)
    lineage = pipeline_sub.add_parser("lineage", help="which examples, schema and transform produced a pushed model")
    lineage.add_argument("--model", required=True)
    lineage.add_argument("--serving-dir", default="saved_models")
    lineage.add_argument("--version", type=int, help="default: the latest pushed version")
    lineage.add_argument("--pipeline-root", help="default pipelines/<model>")
    lineage.add_argument("--metadata", help="the ML Metadata SQLite file (default <pipeline-root>/metadata.sqlite)")
    lineage.set_defaults(func=cmd_pipeline_lineage)

    p = sub.add_parser("tokenizer", help="semantic-ID tokenizers for generative models")
    tokenizer_sub = p.add_subparsers(dest="tokenizer_command", required=True)
    p = tokenizer_sub.add_parser("fit", help="fit a semantic-ID tokenizer on a data set's item vectors")
    p.add_argument("--dataset", required=True, help=DATASET_HELP)
    p.add_argument("--out", required=True, help="directory for tokenizer.json and tables.npz")
    p.add_argument("--levels", type=int, help="levels of codes (default: the data set's, see DATASET_DEFAULTS)")
    p.add_argument("--codes", type=int, help="codes per level (default: the data set's)")
    p.add_argument("--method", choices=("rq_kmeans", "rq_vae"), default="rq_kmeans")
    p.add_argument("--data-dir", help="a prepared data set of the generative family")
    _add_data_arguments(p)
    p.set_defaults(func=cmd_tokenizer_fit)

    from tfrec_onerec.serving.cli import add_subcommands as add_serving_subcommands

    add_serving_subcommands(sub)  # serve, query

    p = sub.add_parser("demo", help="MovieLens-100K: the TFX pipeline trains and pushes DIN, then it recommends")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--serving-dir", default="saved_models")
    p.add_argument("--pipeline-root", default="pipelines/din")
    p.add_argument("--runner", choices=("local", "beam"), default="beam")
    p.add_argument("--users", type=int, default=3)
    p.add_argument("--top-k", type=int, default=5)
    p.set_defaults(func=cmd_demo)
    _add_verbose_flag(parser)
    return parser


def _add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    """``--verbose`` on every leaf subcommand (TensorFlow, TFX and Beam logs at INFO)."""
    children = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    if not children:
        if "--verbose" not in parser._option_string_actions:
            parser.add_argument("--verbose", action="store_true",
                                help="show TensorFlow, TFX and Beam logs (default: progress lines and results only)")
        return
    for child in {id(p): p for p in children[0].choices.values()}.values():
        _add_verbose_flag(child)


def main(argv=None) -> int:
    """Runs one subcommand; returns the process exit status (0: success)."""
    args = build_parser().parse_args(argv)
    _configure_output(getattr(args, "verbose", False))
    args.func(args)
    return 0


def _configure_output(verbose: bool) -> None:
    """Quiet framework logs unless ``--verbose`` (see :mod:`tfrec_onerec.console`)."""
    from tfrec_onerec.console import configure_output

    configure_output(verbose)


if __name__ == "__main__":
    raise SystemExit(main())
