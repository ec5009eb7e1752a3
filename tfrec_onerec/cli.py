"""The `tfrec-onerec` command line: models, data, train, evaluate, pipeline, serve, query, demo."""
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
    own_data = {"onerec": cmd_train_onerec, "sasrec": cmd_train_sasrec, "onerec_reward": cmd_train_reward}
    if args.model in own_data:  # generative and next-item models read their own data paths
        return own_data[args.model](args)
    from tfrec_onerec.models.base import RecommenderModel

    model_class = models.get(args.model)
    if not issubclass(model_class, RecommenderModel):
        raise SystemExit(f"tfrec-onerec: `train` fits models that score (user, item) examples; {args.model!r} is "
                         "a generative or next-item model: train it from Python for now (README, Generative OneRec).")
    config = _sample_config(args)
    keras.utils.set_random_seed(config.seed)
    prepared = _prepared(args, config)
    tasks = args.task or list(data.get(args.dataset).default_tasks)
    hyperparameters = json.loads(args.hparams) if args.hparams else {}
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


def _generative_data(args):
    from tfrec_onerec.generative_training import load_generative_data

    return load_generative_data(args.dataset, session_len=args.session_len, data_path=args.data_path,
                                seed=args.seed or 0, simulator_users=args.simulator_users,
                                simulator_items=args.simulator_items)


def _simulator_config(args):
    """The simulated world of `train --model sasrec|onerec_reward --dataset simulator`: the
    size of OneRec's (--simulator-users x --simulator-items)."""
    from tfrec_onerec.data.simulator import session_world

    return session_world(args.simulator_users, args.simulator_items, args.seed or 0)


def _add_simulator_arguments(parser):
    parser.add_argument("--simulator-users", type=int, default=3000,
                        help="on the simulator: users of the simulated world")
    parser.add_argument("--simulator-items", type=int, default=400,
                        help="on the simulator: items of the simulated world")


def _write_metrics(args, results, history):
    if args.metrics_out:
        Path(args.metrics_out).write_text(json.dumps({"model": args.model, "dataset": args.dataset,
                                                      "test": results, "history": history.history}, indent=2))


def _print_tokenizer_report(tokenizer):
    print(f"Semantic IDs: {tokenizer.num_levels} levels + collision digit, vocab sizes {tokenizer.vocab_sizes}")
    for level in tokenizer.report["levels"]:
        print(f"   level {level['level']}: utilisation {level['utilisation']:.3f}, entropy "
              f"{level['entropy_bits']:.2f} bits, collision rate {level['collision_rate']:.3f}, "
              f"reconstruction error {level['reconstruction_error']:.3f}")


def cmd_tokenizer_fit(args):
    from tfrec_onerec.generative_training import fit_tokenizer

    _check_choice(args.dataset, ["movielens-100k", "simulator"], "dataset")
    tokenizer = fit_tokenizer(_generative_data(args), args.levels, args.codes, args.method, args.seed or 0)
    _print_tokenizer_report(tokenizer)
    print(f"Saved the tokenizer to {tokenizer.save(args.out)}")


def cmd_train_onerec(args):
    """`train --model onerec`: tokenizer (fitted unless --tokenizer), OneRec.fit, metrics, export."""
    import keras

    from tfrec_onerec import generative_training as gt
    from tfrec_onerec.data import sessions
    from tfrec_onerec.export import export_saved_model
    from tfrec_onerec.models.generative.alignment import top_sessions
    from tfrec_onerec.models.generative.tokenizer import SemanticIDTokenizer

    keras.utils.set_random_seed(args.seed or 0)
    data = _generative_data(args)
    if args.tokenizer:
        tokenizer = SemanticIDTokenizer.load(args.tokenizer)
    else:
        tokenizer = gt.fit_tokenizer(data, seed=args.seed or 0)
    _print_tokenizer_report(tokenizer)
    hyperparameters = json.loads(args.hparams) if args.hparams else {}
    model, history, tokens_per_s = gt.fit_onerec(
        data, tokenizer, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
        verbose="auto" if args.verbose is None else args.verbose, **hyperparameters)
    print(f"Trained OneRec: {tokens_per_s:,.0f} target tokens/s; expert load per decoder layer: "
          + "; ".join(str(load.round(3).tolist()) for load in model.expert_load()))
    test = data.splits["test"]
    if data.simulation is not None:
        generated = top_sessions(model, test, model.beam_size, 1)[:, 0, :]
        print(f"True expected metrics of the generated sessions ({len(generated)} test sessions):")
        results = sessions.evaluate_sessions(data.simulation, test["user_id"], generated)
        print("   " + ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
    else:
        results = gt.next_item_ranking(model, test)
        print(f"Next-item full ranking on {args.dataset}'s test split (leave-one-out):")
        print("   " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in results.items()))
    _write_metrics(args, results, history)
    if args.export:
        path = export_saved_model(model, args.export, model_name="onerec")
        print(f"Exported SavedModel (signatures: recommend, serving_default) to {path}")
    return model, results


def cmd_train_sasrec(args):
    """`train --model sasrec`: leave-one-out sequences, SASRec.fit, full-ranking test metrics, export."""
    import keras

    from tfrec_onerec import sequence_training
    from tfrec_onerec.export import export_saved_model

    seed = args.seed or 0
    keras.utils.set_random_seed(seed)
    data = sequence_training.load_next_item_data(args.dataset, args.max_len or 50, args.data_path,
                                                 _simulator_config(args))
    print(f"Next-item data of {args.dataset} (leave-one-out): {len(data.train_inputs):,} training windows of "
          f"{data.max_len} steps, {len(data.user_ids):,} evaluated users, {data.num_items:,} items")
    hyperparameters = json.loads(args.hparams) if args.hparams else {}
    model, history = sequence_training.fit_sasrec(
        data, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate, seed=seed,
        verbose="auto" if args.verbose is None else args.verbose, **hyperparameters)
    results = sequence_training.evaluate_next_item(model, data, "test")
    print(f"\nNext-item full ranking on {args.dataset}'s test split ({results['sasrec']['users']} users; "
          "the target among all items not in the user's history):")
    for name, metrics in results.items():
        print(f"   {name:<11}" + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "users"))
    _write_metrics(args, results, history)
    if args.export:
        path = export_saved_model(model, args.export, model_name="sasrec")
        print(f"Exported SavedModel (signatures: recommend, serving_default; top {model.top_n}) to {path}")
    return model, results


def cmd_train_reward(args):
    """`train --model onerec_reward`: simulator sessions, reward-model fit, per-task test AUC, export."""
    import keras

    from tfrec_onerec import reward_training, training
    from tfrec_onerec.data.sessions import SessionConfig
    from tfrec_onerec.export import export_saved_model

    if args.dataset != "simulator":
        raise SystemExit(f"tfrec-onerec: onerec_reward learns session outcomes (watch time, views, follows, likes) "
                         f"that only the simulator logs; use --dataset simulator, not {args.dataset!r}.")
    seed = args.seed or 0
    keras.utils.set_random_seed(seed)
    world, data = reward_training.load_reward_data(_simulator_config(args), SessionConfig(session_len=args.session_len))
    print("Session samples of the simulator: " + ", ".join(
        f"{len(columns['user_id']):,} {split}" for split, columns in data.splits.items()))
    hyperparameters = json.loads(args.hparams) if args.hparams else {}
    config = training.TrainConfig(epochs=args.epochs, learning_rate=args.learning_rate,
                                  early_stopping_patience=args.patience, checkpoint_dir=args.checkpoint_dir,
                                  jit_compile=args.jit_compile,
                                  verbose="auto" if args.verbose is None else args.verbose)
    model, history = reward_training.fit_reward_model(data, config, batch_size=args.batch_size, seed=seed,
                                                      **hyperparameters)
    results = reward_training.evaluate_reward_model(model, world, data, "test")
    print(f"\nTest AUC of onerec_reward per task (sessions with the outcome vs without; oracle: the simulator's "
          "expected label):")
    print(f"{'task':<10}{'AUC':>8}{'oracle':>8}{'positives':>11}{'sessions':>10}")
    for task, r in results["tasks"].items():
        print(f"{task:<10}{r['auc']:>8.4f}{r['oracle_auc']:>8.4f}{r['positives']:>11d}{r['sessions']:>10d}")
    print(f"Correlation of the reward with the true session value: {results['reward_value_correlation']:.4f}")
    _write_metrics(args, results, history)
    if args.export:
        path = export_saved_model(model, args.export, model_name="onerec_reward")
        print(f"Exported SavedModel (signatures: serving_default, predict) to {path}")
    return model, results


def cmd_evaluate(args):
    from tfrec_onerec import data, evaluation

    _check_choice(args.dataset, data.names(), "dataset")
    prepared = _prepared(args, _sample_config(args))
    results = evaluation.evaluate_saved_model(args.model_dir, prepared.dataset("test", batch_size=1024))
    print(evaluation.format_results(results))
    return results


def _pipeline_config(args):
    """The PipelineConfig of `pipeline run/compile`: data from --data-dir or the prepared --dataset."""
    from tfx_pipelines.pipeline import DIRECT_MULTIPROCESSING, PipelineConfig

    if args.data_dir:
        data_dir = args.data_dir
    else:
        from tfrec_onerec import data

        _check_choice(args.dataset, data.names(), "dataset")
        data_dir = str(_prepared(args, _sample_config(args)).directory)
    tasks = args.task or (["click"] if args.data_dir else list(_dataset_tasks(args.dataset)))
    return PipelineConfig(
        model=args.model, data=data_dir, pipeline_root=args.pipeline_root or f"pipelines/{args.model}",
        serving_dir=args.serving_dir, tasks=tasks, hyperparameters=json.loads(args.hparams) if args.hparams else {},
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate, strategy=args.strategy,
        schema=args.schema, min_auc=args.min_auc, max_auc_drop=args.max_auc_drop,
        beam_args=args.beam_arg or DIRECT_MULTIPROCESSING, enable_cache=not args.no_cache,
        seed=args.seed or 0)


def _dataset_tasks(name):
    from tfrec_onerec import data

    return data.get(name).default_tasks


def cmd_pipeline_run(args):
    from tfrec_onerec import models

    _check_choice(args.model, models.list(), "model")
    from tfx_pipelines.runners import run_pipeline

    config = _pipeline_config(args)
    wall = run_pipeline(config, args.runner)
    from tfrec_onerec.export import versions

    pushed = versions(config.model_serving_dir)
    print(f"Pipeline {config.name} finished in {wall:.1f} s; versions in {config.model_serving_dir}: {pushed}")
    return config


def cmd_pipeline_compile(args):
    from tfx_pipelines.runners import compile_kubeflow

    config = _pipeline_config(args)
    path = compile_kubeflow(config, args.output, args.image)
    print(f"Wrote the Kubeflow pipeline to {path} (image {args.image})")


def cmd_pipeline_lineage(args):
    from tfrec_onerec.export import latest_version
    from tfx_pipelines.lineage import format_lineage, model_lineage

    version_dir = Path(args.serving_dir) / args.model
    version_dir = version_dir / str(args.version) if args.version else latest_version(version_dir)
    metadata = args.metadata or str(Path(args.pipeline_root or f"pipelines/{args.model}") / "metadata.sqlite")
    print(f"Lineage of {version_dir}:")
    print(format_lineage(model_lineage(metadata, version_dir)))


def cmd_demo(args):
    from tfrec_onerec.demo import run_demo

    run_demo(epochs=args.epochs, serving_dir=args.serving_dir, pipeline_root=args.pipeline_root,
             num_users=args.users, top_k=args.top_k, runner=args.runner)


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
    p.add_argument("--tokenizer", help="onerec: a fitted tokenizer directory (default: fitted here)")
    p.add_argument("--session-len", type=int, default=3,
                   help="onerec: items per generated session; onerec_reward: items per scored session")
    _add_simulator_arguments(p)
    _add_sample_arguments(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate an exported SavedModel on a data set's test split")
    p.add_argument("--model-dir", required=True, help="an export directory (its latest version) or a version")
    p.add_argument("--dataset", required=True)
    p.add_argument("--data-dir")
    _add_sample_arguments(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("pipeline", help="TFX pipelines: run locally, compile for Kubeflow, show lineage")
    pipeline_sub = p.add_subparsers(dest="pipeline_command", required=True)
    run = pipeline_sub.add_parser("run", help="run ExampleGen -> ... -> Pusher (DirectRunner)")
    compile_ = pipeline_sub.add_parser("compile", help="compile the pipeline to a Kubeflow Pipelines JSON")
    for q in (run, compile_):
        q.add_argument("--model", required=True, help="a registered model name")
        q.add_argument("--dataset", default="movielens-100k", help="movielens-100k or simulator (prepared, cached)")
        q.add_argument("--data-dir", help="a prepared TFRecord directory or a CSV directory with spec.json")
        q.add_argument("--pipeline-root", help="TFX artifacts and ML Metadata (default pipelines/<model>)")
        q.add_argument("--serving-dir", default="saved_models", help="pushes go to <serving-dir>/<model>/<version>")
        q.add_argument("--task", action="append", help="task (label) to train on; repeatable")
        q.add_argument("--epochs", type=int, default=2)
        q.add_argument("--batch-size", type=int, default=256)
        q.add_argument("--learning-rate", type=float, default=1e-3)
        q.add_argument("--hparams", help="model hyperparameters as JSON")
        q.add_argument("--strategy", choices=("none", "mirrored"), default="none")
        q.add_argument("--schema", choices=("derived", "inferred"), default="derived",
                       help="derived from the feature spec (checked against SchemaGen's), or inferred")
        q.add_argument("--min-auc", type=float, default=0.6, help="blessing threshold on eval AUC")
        q.add_argument("--max-auc-drop", type=float, default=0.01,
                       help="largest AUC drop allowed against the latest blessed model")
        q.add_argument("--beam-arg", action="append",
                       help="a Beam pipeline argument, repeatable (default: DirectRunner, 2 processes)")
        q.add_argument("--no-cache", action="store_true", help="rerun every component")
        _add_sample_arguments(q)
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
    p.add_argument("--dataset", required=True, help="movielens-100k or simulator")
    p.add_argument("--out", required=True, help="directory for tokenizer.json and tables.npz")
    p.add_argument("--levels", type=int, help="levels of codes (default: the data set's, see DATASET_DEFAULTS)")
    p.add_argument("--codes", type=int, help="codes per level (default: the data set's)")
    p.add_argument("--method", choices=("rq_kmeans", "rq_vae"), default="rq_kmeans")
    p.add_argument("--session-len", type=int, default=3)
    p.add_argument("--seed", type=int)
    p.add_argument("--data-path", default=None)
    _add_simulator_arguments(p)
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
    return parser


def main(argv=None) -> int:
    """Runs one subcommand; returns the process exit status (0: success)."""
    args = build_parser().parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
