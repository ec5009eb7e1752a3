"""The TFMA configuration of multi-task models: every output gated, sample spaces as example weights."""
import pytest
import tfx  # noqa: F401  (before TFDV/TFMA, see docs/STACK.md)

from known_answer import known_funnel_columns, known_funnel_spec
from tfrec_onerec.data.prepared import write_prepared
from tfrec_onerec.features.spec import Task
from tfx_pipelines.evaluator import eval_config
from tfx_pipelines.pipeline import PipelineConfig


def test_esmm_pipeline_gates_every_output_and_scores_cvr_on_clicked_examples(tmp_path):
    columns = known_funnel_columns(20, 0)
    write_prepared(tmp_path, known_funnel_spec(), {"train": columns, "valid": columns, "test": columns},
                   {"name": "known-funnel"}, progress=False)
    config = PipelineConfig(model="esmm", data=str(tmp_path), pipeline_root=str(tmp_path / "root"),
                            tasks=["click", "conversion"])
    assert config.task_list() == [Task("click"), Task("conversion")]
    tasks = config.output_tasks()
    assert tasks[2] == Task("cvr", label="conversion", sample_space="click", weight=0.0)
    config_proto = eval_config(tasks, [], 0.6, 0.01)
    [model_spec] = config_proto.model_specs
    assert dict(model_spec.example_weight_keys) == {"cvr": "click"}
    assert dict(model_spec.label_keys) == {"click": "click", "conversion": "conversion", "cvr": "conversion"}
    whole, masked = config_proto.metrics_specs
    assert list(whole.output_names) == ["click", "conversion"] and not whole.example_weights.weighted
    assert list(masked.output_names) == ["cvr"] and masked.example_weights.weighted
    for spec in (whole, masked):  # every output's AUC is gated
        [auc] = [m for m in spec.metrics if m.class_name == "AUC"]
        assert auc.threshold.value_threshold.lower_bound.value == 0.6


def test_a_multi_task_model_without_a_funnel_needs_its_tasks_named(tmp_path):
    columns = known_funnel_columns(20, 0)
    write_prepared(tmp_path, known_funnel_spec(), {"train": columns, "valid": columns, "test": columns},
                   {"name": "known-funnel"}, progress=False)
    config = PipelineConfig(model="mmoe", data=str(tmp_path), pipeline_root=str(tmp_path / "root"))
    with pytest.raises(ValueError, match="MMoE needs at least 2 tasks; name them with --task"):
        config.task_list()
