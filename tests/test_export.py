"""SavedModel export: TF Serving layout, both signatures, warmup, fresh-process serving, atomicity."""
import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfrec_onerec import export, models, training
from tfrec_onerec.features.datasets import columns_dataset
from tfrec_onerec.features.tfrecord import serialize_rows

from fresh_process import run_fresh
from known_answer import known_answer_columns, known_answer_spec


@pytest.fixture(scope="module")
def trained():
    spec, cols = known_answer_spec(), known_answer_columns(1024, 0)
    keras.utils.set_random_seed(0)
    model, _ = training.fit(lambda: models.get("din")(spec, ["click", "like"]),
                            columns_dataset(dict(cols, like=cols["click"]), spec, ["click", "like"], batch_size=128),
                            config=training.TrainConfig(epochs=1, verbose=0))
    batch = {k: v[:32] for k, v in cols.items() if k != "click"}
    batch["hist_item_id"][0] = 0  # one all-padding history
    batch["hist_cat"][0] = 0
    batch["item_id"][1] = 999  # one out-of-vocabulary candidate
    return model, spec, batch


def test_export_serves_in_a_process_without_tfrec_onerec(trained, tmp_path):
    model, spec, batch = trained
    path = export.export_saved_model(model, tmp_path / "din", warmup_batch=batch)
    assert path == tmp_path / "din" / "1"
    expected = {k: keras.ops.convert_to_numpy(v) for k, v in model(batch).items()}
    records = [r.hex() for r in serialize_rows(batch, spec)]
    out = run_fresh(f"""
        import json, sys
        import tensorflow as tf
        payload = json.loads(sys.stdin.read())
        loaded = tf.saved_model.load({str(path)!r})
        examples = tf.constant([bytes.fromhex(r) for r in payload["records"]])
        served = loaded.signatures["serving_default"](examples=examples)
        raw = loaded.signatures["predict"](**{{k: tf.constant(v, tf.int64) for k, v in payload["batch"].items()}})
        print(json.dumps({{"signatures": sorted(loaded.signatures),
                          "served": {{k: v.numpy().tolist() for k, v in served.items()}},
                          "raw": {{k: v.numpy().tolist() for k, v in raw.items()}}}}))
    """, {"records": records, "batch": {k: v.tolist() for k, v in batch.items()}})
    assert out["signatures"] == ["predict", "serving_default"]
    for task in ("click", "like"):
        np.testing.assert_allclose(out["served"][task], expected[task], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out["raw"][task], expected[task], rtol=1e-5, atol=1e-6)


def test_warmup_requests_cover_every_signature_and_replay(trained, tmp_path):
    from tensorflow_serving.apis import prediction_log_pb2

    model, spec, batch = trained
    path = export.export_saved_model(model, tmp_path / "din", warmup_batch=batch, model_name="din")
    warmup = path / "assets.extra" / "tf_serving_warmup_requests"
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(warmup))]
    requests = {log.predict_log.request.model_spec.signature_name: log.predict_log.request for log in logs}
    assert set(requests) == {"serving_default", "predict"}
    assert all(r.model_spec.name == "din" for r in requests.values())
    loaded = tf.saved_model.load(str(path))
    for name, request in requests.items():
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        out = loaded.signatures[name](**{k: tf.constant(v) for k, v in inputs.items()})
        assert out["click"].shape == (32, 1)
    assert json.loads((path / "assets.extra" / "feature_spec.json").read_text())["features"][0]["name"] == "user_id"


def test_saved_model_cli_lists_both_signatures(trained, tmp_path):
    model, _, _ = trained
    path = export.export_saved_model(model, tmp_path / "m")
    cli = subprocess.run([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show", "--all",
                          "--dir", str(path)], capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert "signature_def['serving_default']" in cli.stdout and "signature_def['predict']" in cli.stdout
    assert "inputs['examples']" in cli.stdout and "inputs['hist_item_id']" in cli.stdout


def test_versions_increment_and_existing_version_is_refused(trained, tmp_path):
    model, _, _ = trained
    first = export.export_saved_model(model, tmp_path / "m")
    second = export.export_saved_model(model, tmp_path / "m")
    assert (first.name, second.name) == ("1", "2")
    (tmp_path / "m" / ".staging-3-abc").mkdir()  # never a version
    assert export.versions(tmp_path / "m") == [1, 2]
    assert export.latest_version(tmp_path / "m") == second and export.latest_version(first) == first
    with pytest.raises(FileNotFoundError, match="No SavedModel version under"):
        export.latest_version(tmp_path / "empty")
    stamp = (first / "saved_model.pb").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        export.export_saved_model(model, tmp_path / "m", version=1)
    assert (first / "saved_model.pb").stat().st_mtime_ns == stamp


def test_failed_export_leaves_no_half_written_version(trained, tmp_path, monkeypatch):
    model, _, _ = trained

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export, "write_warmup_requests", broken)
    with pytest.raises(OSError, match="disk full"):
        export.export_saved_model(model, tmp_path / "m")
    assert list((tmp_path / "m").iterdir()) == []


def test_export_to_a_remote_uri_goes_through_gfile(trained, tmp_path, monkeypatch):
    import uuid

    model, spec, batch = trained
    monkeypatch.chdir(tmp_path)  # pathlib would have made a local folder "ram:/..." here
    base = f"ram://export-{uuid.uuid4().hex[:8]}/din"
    first = export.export_saved_model(model, base, warmup_batch=batch)
    second = export.export_saved_model(model, base + "/")
    assert (first, second) == (base + "/1", base + "/2")
    assert export.versions(base) == [1, 2] and sorted(tf.io.gfile.listdir(base)) == ["1", "2"]  # no staging left
    assert export.latest_version(base) == second and export.latest_version(first) == first
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileExistsError, match=f"{base}/1 already exists"):
        export.export_saved_model(model, base, version=1)
    loaded = tf.saved_model.load(first)
    records = tf.constant(serialize_rows(batch, spec))
    np.testing.assert_allclose(loaded.signatures["serving_default"](examples=records)["click"].numpy(),
                               keras.ops.convert_to_numpy(model(batch)["click"]), rtol=1e-5, atol=1e-6)
    with tf.io.gfile.GFile(f"{first}/assets.extra/feature_spec.json") as handle:
        assert json.loads(handle.read())["features"][0]["name"] == "user_id"
    assert tf.io.gfile.exists(f"{first}/assets.extra/tf_serving_warmup_requests")
    assert tf.io.gfile.exists(f"{first}/fingerprint.pb")
    with pytest.raises(FileNotFoundError, match="No SavedModel version under ram://nothing-here"):
        export.latest_version("ram://nothing-here")


def test_failed_remote_export_leaves_nothing(trained, monkeypatch):
    import uuid

    model, _, _ = trained
    base = f"ram://export-{uuid.uuid4().hex[:8]}/m"

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export, "write_warmup_requests", broken)
    with pytest.raises(OSError, match="disk full"):
        export.export_saved_model(model, base)
    assert tf.io.gfile.listdir(base) == [] and export.versions(base) == []
