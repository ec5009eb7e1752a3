"""The demo behind `make demo`: MovieLens-100K -> TFX pipeline (DIN) -> pushed SavedModel -> gRPC recommendations."""
from __future__ import annotations

from tfrec_onerec import families
from tfrec_onerec.data import movielens
from tfrec_onerec.export import latest_version

DEMO_USERS = (1, 405, 655)  # a long-time rater, the most active user, another heavy rater


def run_demo(epochs: int = 2, serving_dir: str = "saved_models", pipeline_root: str = "pipelines/din",
             num_users: int = 3, top_k: int = 5, runner: str = "beam", verbose: bool = False):
    """Runs the demo. Quiet by default: the demo's own lines, a line per pipeline component and
    the Trainer's epochs; ``verbose`` also shows TensorFlow, TFX and Beam logs at INFO. The
    pipeline run's full logs go to ``<pipeline_root>/logs/run-<timestamp>.log`` either way."""
    from tfrec_onerec import console

    if console.is_verbose() != bool(verbose) or not console.is_configured():
        console.configure_output(verbose)  # the CLI configures it first; a caller from Python may not
    from tfrec_onerec.serving import demo_query
    from tfx_pipelines.lineage import format_lineage, model_lineage
    from tfx_pipelines.pipeline import PipelineConfig
    from tfx_pipelines.runners import run_pipeline

    print("== 1. MovieLens-100K (from the recbole 1.2.1 wheel on PyPI, sha256-verified)")
    tables = movielens.load_movielens_100k()
    print(f"   {len(tables.ratings):,} ratings, {len(tables.users)} users, {len(tables.items):,} movies, "
          f"{len(tables.kg):,} KG triples")
    family = families.for_model("din")  # the point-wise family prepares the samples (cached)
    prepared = family.prepare(movielens.NAME)
    options = prepared.metadata["options"]
    print(f"   samples per split: {prepared.metadata['examples']} (leave-one-out; {options['negatives']} negative per "
          f"training positive, {options['eval_negatives']} per test positive)")

    print(f"== 2. TFX pipeline ({runner} runner, Beam DirectRunner with 2 worker processes; DIN, {epochs} epochs)")
    print("   ExampleGen -> StatisticsGen -> SchemaGen -> ExampleValidator -> Transform -> Trainer -> Evaluator "
          "-> Pusher  (cached components are reused on a rerun;"
          f" {'TFX/Beam logs shown' if verbose else '--verbose shows the TFX/Beam logs'})")
    pipeline = PipelineConfig(model="din", data=prepared.side_dir, pipeline_root=pipeline_root,
                              serving_dir=serving_dir, epochs=epochs)
    wall = run_pipeline(pipeline, runner, verbose=verbose)
    print(f"   pipeline finished in {wall:.0f} s")
    metadata = f"{pipeline_root}/metadata.sqlite"

    print("== 3. The pushed model")
    pushed = latest_version(pipeline.model_serving_dir)
    print(f"   {pushed}  (blessed by the Evaluator; signatures: serving_default takes raw tf.Examples, predict)")
    print("   test metrics of the pushed SavedModel:")
    print(family.format_results(family.evaluate_export(pushed, prepared, "test")))
    print("   lineage (ML Metadata):")
    print("   " + format_lineage(model_lineage(metadata, pushed)).replace("\n", "\n   "))

    print("== 4. Serving the pushed model over TF Serving's gRPC API (local server, free ports)")
    print("   top unrated movies per user, highest score first:")
    demo_query(serving_dir, "din", DEMO_USERS[:num_users], top_k, tables=tables)
