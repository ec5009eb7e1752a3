"""Kubeflow compilation (no cluster needed) and the atomic push."""
import json
import os
import threading
from pathlib import Path

import pytest
import tfx  # noqa: F401  (before TFDV/TFMA, see docs/STACK.md)

from known_answer import known_answer_spec
from tfx_pipelines import pusher
from tfx_pipelines.pipeline import PipelineConfig, beam_arguments
from tfx_pipelines.runners import compile_kubeflow

COMPONENTS = {"ImportExampleGen", "StatisticsGen", "SchemaGen", "ImportSchemaGen", "SchemaAgreement",
              "ExampleValidator", "DataGate", "Transform", "Trainer", "Evaluator", "Pusher"}


def test_kubeflow_json_names_every_component_its_inputs_and_the_image(data_dir, tmp_path):
    config = PipelineConfig(model="din", data=str(data_dir), pipeline_root=str(tmp_path / "root"),
                            serving_dir=str(tmp_path / "serving"))
    path = compile_kubeflow(config, str(tmp_path / "kf" / "pipeline.json"), image="registry.example/tfrec:7")
    spec = json.loads(path.read_text())["pipelineSpec"]
    tasks = spec["root"]["dag"]["tasks"]
    assert COMPONENTS <= set(tasks)

    def inputs(task):
        return {name: (a["taskOutputArtifact"]["producerTask"], a["taskOutputArtifact"]["outputArtifactKey"])
                for name, a in tasks[task]["inputs"].get("artifacts", {}).items()}

    assert inputs("Trainer") == {"examples": ("Transform", "transformed_examples"),
                                 "transform_graph": ("Transform", "transform_graph"),
                                 "schema": ("ImportSchemaGen", "schema")}
    assert inputs("Transform") == {"examples": ("ImportExampleGen", "examples"), "schema": ("ImportSchemaGen", "schema")}
    assert inputs("Pusher") == {"model": ("Trainer", "model"), "model_blessing": ("Evaluator", "blessing")}
    assert inputs("SchemaAgreement") == {"inferred": ("SchemaGen", "schema"), "derived": ("ImportSchemaGen", "schema")}
    assert inputs("DataGate") == {"anomalies": ("ExampleValidator", "anomalies")}
    assert inputs("Evaluator")["model"] == ("Trainer", "model")
    assert {"DataGate", "SchemaAgreement"} <= set(tasks["Transform"]["dependentTasks"])
    executors = spec["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values() if "container" in e} == {"registry.example/tfrec:7"}
    assert "tfx_pipelines.pusher.AtomicPushExecutor" in json.dumps(executors["Pusher_executor"])


def test_beam_workers_always_import_tfx_first():
    assert beam_arguments(["--runner=DataflowRunner"]) == ["--runner=DataflowRunner", "--beam_plugins=tfx"]
    assert beam_arguments(["--beam_plugins=mine"]) == ["--beam_plugins=mine"]


def fake_model(directory: Path, files: int = 200) -> Path:
    (directory / "variables").mkdir(parents=True)
    for i in range(files):
        (directory / "variables" / f"shard-{i}").write_bytes(b"x" * 20_000)
    (directory / "saved_model.pb").write_bytes(b"graph")
    (directory / "fingerprint.pb").write_bytes(directory.name.encode())
    return directory


def test_push_is_atomic_to_a_concurrent_reader(tmp_path):
    base = tmp_path / "serving" / "din"
    seen, done = [], threading.Event()

    def reader():
        while not done.is_set():
            for version in base.glob("[0-9]*"):
                seen.append(len(list((version / "variables").iterdir())) if (version / "saved_model.pb").exists()
                            else -1)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        pushed = [pusher.push_atomically(str(fake_model(tmp_path / f"model{i}")), str(base)) for i in range(3)]
    finally:
        done.set()
        thread.join()
    assert [p.name for p in pushed] == ["1", "2", "3"]
    assert seen and set(seen) == {200}  # every version a reader saw was complete
    assert sorted(p.name for p in base.iterdir()) == ["1", "2", "3"]  # no staging directory left


def test_failed_push_leaves_nothing_and_keeps_served_versions(tmp_path, monkeypatch):
    base = tmp_path / "serving" / "din"
    pusher.push_atomically(str(fake_model(tmp_path / "model", files=3)), str(base))
    model = fake_model(tmp_path / "retrained", files=3)

    def failing_rename(source, destination):  # e.g. the file system fails after the copy
        raise OSError("disk full")

    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(OSError, match="disk full"):
        pusher.push_atomically(str(model), str(base))
    assert sorted(p.name for p in base.iterdir()) == ["1"]


def test_a_model_already_served_is_not_pushed_again(tmp_path):
    model = fake_model(tmp_path / "model", files=2)
    base = tmp_path / "serving" / "din"
    first = pusher.push_atomically(str(model), str(base))
    assert pusher.push_atomically(str(model), str(base)) == first
    assert pusher.push_atomically(str(fake_model(tmp_path / "other", files=2)), str(base)).name == "2"


def test_csv_data_uses_csv_example_gen_and_refuses_sequence_features(tmp_path):
    from tfrec_onerec.features import Feature, FeatureSpec
    from tfx_pipelines.pipeline import create_pipeline

    flat = FeatureSpec([Feature("user_id", "categorical", vocab_size=9), Feature("age", "numeric")], labels=["click"])
    (tmp_path / "spec.json").write_text(flat.to_json())
    (tmp_path / "rows.csv").write_text("user_id,age,click\n1,0.5,1\n2,0.1,0\n")
    config = PipelineConfig(model="din_base", data=str(tmp_path), pipeline_root=str(tmp_path / "root"))
    assert config.data_format() == "csv"
    components = {c.id: type(c).__name__ for c in create_pipeline(config).components}
    assert components["CsvExampleGen"] == "CsvExampleGen" and "ImportExampleGen" not in components

    (tmp_path / "spec.json").write_text(known_answer_spec().to_json())
    with pytest.raises(ValueError, match=r"CSV data cannot hold the sequence features \['hist_item_id', 'hist_cat'\]"):
        create_pipeline(config)


def test_unknown_model_and_missing_data_are_named(tmp_path):
    with pytest.raises(ValueError, match="Unknown model 'no_such_model'; registered models: .*din, din_base"):
        PipelineConfig(model="no_such_model", data=str(tmp_path), pipeline_root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="holds neither train.tfrecord/valid.tfrecord .* nor \\*.csv"):
        PipelineConfig(model="din", data=str(tmp_path), pipeline_root=str(tmp_path))
    (tmp_path / "rows.csv").write_text("user_id,click\n1,1\n")
    config = PipelineConfig(model="din", data=str(tmp_path), pipeline_root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="spec.json not found"):
        config.spec()
