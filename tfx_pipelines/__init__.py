"""TFX pipelines for any model of the zoo: ExampleGen to Pusher, locally on Beam or on Kubeflow.

    from tfx_pipelines import PipelineConfig, run_pipeline
    run_pipeline(PipelineConfig(model="din", data="data/ml100k", pipeline_root="pipelines/din"), "beam")

Modules: :mod:`~tfx_pipelines.pipeline` (the factory and its config), ``schema`` (schema
derived from the feature spec), ``preprocessing`` (Transform's preprocessing_fn), ``trainer``
(run_fn), ``evaluator`` (TFMA config), ``gates`` (stop on anomalies / schema disagreement),
``pusher`` (atomic pushes), ``runners`` (local, Beam, Kubeflow), ``lineage`` and
``run_report`` (ML Metadata queries).

`import tfrec_onerec` never imports this package: TFX and Beam stay out of the library's imports.
"""
import tfrec_onerec  # noqa: F401  (environment first: TF_USE_LEGACY_KERAS before TensorFlow)
import tfx  # noqa: F401  (before TFDV: `import tfx` stubs a tfx-bsl module TFDV needs, see docs/STACK.md)

from tfx_pipelines.pipeline import PipelineConfig, create_pipeline  # noqa: E402
from tfx_pipelines.runners import compile_kubeflow, run_pipeline  # noqa: E402

__all__ = ["PipelineConfig", "create_pipeline", "run_pipeline", "compile_kubeflow"]
