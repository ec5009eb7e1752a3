"""Running a pipeline locally (LocalDagRunner, BeamDagRunner) and compiling it for Kubeflow.

* ``local``: TFX's LocalDagRunner, components one after another in this process; their Beam
  steps use the pipeline's Beam arguments (default: DirectRunner, 2 processes).
* ``beam``: TFX's BeamDagRunner: the DAG itself is a Beam pipeline (DirectRunner here).
* Kubeflow: :func:`compile_kubeflow` writes a Kubeflow Pipelines v2 JSON (KubeflowV2DagRunner);
  every component runs in ``image``, which must have this package installed.

Beam arguments for the data steps at scale (``--beam-arg`` on the CLI, ``beam_args`` in
:class:`~tfx_pipelines.pipeline.PipelineConfig`), for example::

    Dataflow: --runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp
              --experiments=use_runner_v2 --sdk_container_image=IMAGE
    Flink:    --runner=FlinkRunner --flink_master=HOST:8081 --environment_type=DOCKER
              --environment_config=IMAGE --parallelism=8
    Spark:    --runner=SparkRunner --spark_master_url=spark://HOST:7077
              --environment_type=DOCKER --environment_config=IMAGE
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from tfx_pipelines.pipeline import PipelineConfig, create_pipeline
from tfx_pipelines.run_report import ComponentProgress

RUNNERS = ("local", "beam")
log = logging.getLogger(__name__)


def run_pipeline(config: PipelineConfig, runner: str = "beam", verbose: bool = False) -> float:
    """Runs the pipeline of `config` to completion; returns its wall time in seconds.

    Output: a line naming the log file, then one line per component as it finishes (state:
    complete, cached, skipped or failed; wall time), and the Trainer's per-epoch lines. The
    log file ``<pipeline_root>/logs/run-<YYYYmmdd-HHMMSS>.log`` keeps every TFX, Beam and
    TensorFlow log record at INFO (the Beam workers' included) and the native stderr lines,
    whichever mode.

    Args:
        config: the pipeline.
        runner: ``"local"`` (LocalDagRunner) or ``"beam"`` (BeamDagRunner).
        verbose: also show those logs on the console (see :mod:`tfrec_onerec.console`).

    Raises:
        RuntimeError (from TFX) when a component fails, e.g. the DataGate on anomalies.
    """
    from tfrec_onerec import console

    if runner not in RUNNERS:
        raise ValueError(f"Unknown runner {runner!r}; runners: {', '.join(RUNNERS)} (or compile for kubeflow).")
    log_file = console.log_path(config.pipeline_root)
    with console.output_session(verbose, log_file):
        pipeline = create_pipeline(config)
        if runner == "local":
            from tfx.v1.orchestration import LocalDagRunner
            dag_runner = LocalDagRunner()
        else:
            from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner  # not in the tfx.v1 API
            dag_runner = BeamDagRunner()
        print(f"Pipeline {config.name}: {len(pipeline.components)} components, {runner} runner; "
              f"full logs in {log_file}", flush=True)
        start = time.perf_counter()
        with ComponentProgress(total=len(pipeline.components)) as progress:
            try:
                dag_runner.run(pipeline)
            except BaseException as error:
                progress.fail_unfinished()
                console.file_only("Pipeline %s failed: %s", config.name, error, logger=__name__,
                                  level=logging.ERROR, exc_info=True)
                raise
        elapsed = time.perf_counter() - start
        log.info("Pipeline %s finished in %.1f s (%s)", config.name, elapsed, progress.summary())
    return elapsed


def compile_kubeflow(config: PipelineConfig, output: str, image: str) -> Path:
    """Compiles the pipeline to a Kubeflow Pipelines v2 JSON file at `output`.

    Args:
        config: the pipeline; ``pipeline_root`` and ``serving_dir`` should be paths the
            cluster reaches (e.g. ``gs://``), ``data`` too.
        output: the JSON file to write.
        image: the container image every component runs in (with tfrec_onerec installed).
    """
    from tfx.v1.orchestration.experimental import KubeflowV2DagRunner, KubeflowV2DagRunnerConfig

    pipeline = create_pipeline(config)
    pipeline.metadata_connection_config = None  # Kubeflow brings its own ML Metadata
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    runner = KubeflowV2DagRunner(config=KubeflowV2DagRunnerConfig(default_image=image),
                                 output_dir=str(output.parent), output_filename=output.name)
    runner.run(pipeline, write_out=True)
    return output
