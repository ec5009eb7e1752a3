"""What an operator exposing the server relies on: HandleReloadConfigRequest off unless switched on
and then confined to the model roots; unexpected errors answered with a request id, never with
the exception's text; Prometheus metrics under TF Serving's names when monitoring.config asks;
a readiness signal; failed loads retried with backoff; TF Serving's warmup limit; polls that
survive vanishing folders; a strict start; models.config re-read while serving."""
import json
import logging
import os
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from tensorflow_serving.apis import model_management_pb2

from tfrec_onerec.serving import Client, Server, inference, model_manager, rest
from tfrec_onerec.serving.config import ModelConfig, version_dirs
from tfrec_onerec.serving.model_manager import MAX_WARMUP_RECORDS, WARMUP_FILE, ModelManager, Servable
from tfrec_onerec.serving.rest import model_spec

from serving_helpers import copy_base

TIMEOUT = 60


def reload_request(**models) -> model_management_pb2.ReloadConfigRequest:
    request = model_management_pb2.ReloadConfigRequest()
    for name, base_path in models.items():
        request.config.model_config_list.config.add(name=name, base_path=str(base_path), model_platform="tensorflow")
    return request


def reload_error(client, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        client.models.HandleReloadConfigRequest(request, timeout=TIMEOUT)
    return info.value


def test_reload_config_is_refused_unless_switched_on(exported, tmp_path):
    base = copy_base(exported, tmp_path / "models")
    with Server(base, port=0, rest_port=None, poll_interval_s=0) as server, Client(server.target, "din") as client:
        error = reload_error(client, reload_request(din=base / "din"))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "--allow-reload-config" in error.details()
        assert client.status() == [(1, "AVAILABLE")]


def test_reload_config_serves_only_from_the_model_roots(exported, tmp_path):
    base = copy_base(exported, tmp_path / "models")
    outside = copy_base(exported, tmp_path / "elsewhere")
    os.symlink(outside / "din", base / "linked")  # inside the root by name, outside once resolved
    with Server(base, port=0, rest_port=None, poll_interval_s=0, allow_reload_config=True) as server, \
            Client(server.target, "din") as client:
        for path in (outside / "din", base / "linked", base / ".." / "elsewhere" / "din"):
            error = reload_error(client, reload_request(din=base / "din", stolen=path))
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "'stolen'" in error.details() and str(tmp_path) not in error.details()
        assert sorted(server.manager.model_names) == ["din", "linked", "toy"]  # nothing changed
        client.models.HandleReloadConfigRequest(reload_request(din=base / "din"), timeout=TIMEOUT)
        assert server.manager.model_names == ["din"]
        assert client.status() == [(1, "AVAILABLE")]


def test_unexpected_errors_carry_a_request_id_and_no_exception_text(exported, monkeypatch, caplog):
    secret = "/srv/secret/models/din failed"

    def broken(*args, **kwargs):
        raise RuntimeError(secret)

    caplog.set_level(logging.ERROR)
    with Server(exported.base, port=0, rest_port=0, poll_interval_s=0) as server, \
            Client(server.target, "din", spec=exported.spec) as client:
        monkeypatch.setattr(inference, "predict", broken)  # once loaded: the warmup replay predicts too
        monkeypatch.setattr(rest, "predict_json", broken)
        with pytest.raises(grpc.RpcError) as info:
            client.predict({k: v[:2] for k, v in exported.batch.items()})
        assert info.value.code() == grpc.StatusCode.INTERNAL
        grpc_message = info.value.details()
        request = urllib.request.Request(f"http://{server.host}:{server.rest_port}/v1/models/din:predict",
                                         data=json.dumps({"instances": [{"item_id": 1}]}).encode(), method="POST")
        with pytest.raises(urllib.error.HTTPError) as http_info:
            urllib.request.urlopen(request, timeout=TIMEOUT)
        assert http_info.value.code == 500
        rest_message = json.loads(http_info.value.read())["error"]
    for message in (grpc_message, rest_message):
        assert "request id" in message and secret not in message and "RuntimeError" not in message
        request_id = message.split("request id ")[1].split(")")[0]
        logged = [r for r in caplog.records if request_id in r.getMessage()]
        assert logged and secret in str(logged[0].exc_info[1])


PROMETHEUS_LINE = re.compile(r'(?P<name>[:a-zA-Z_][:a-zA-Z0-9_]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)')


def parse_prometheus(text: str) -> dict:
    """``{(name, ((label, value), ...)): float}`` of Prometheus' text format; raises on a bad line."""
    series = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            assert re.fullmatch(r"(# (HELP|TYPE) [:a-zA-Z_][:a-zA-Z0-9_]* .+)?", line), line
            continue
        match = PROMETHEUS_LINE.fullmatch(line)
        assert match, line
        labels = tuple(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match["labels"] or ""))
        series[(match["name"], labels)] = float(match["value"])
    return series


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_prometheus_metrics_count_requests_and_loads_under_tf_servings_names(exported):
    config = Path(__file__).parents[2] / "deploy" / "monitoring.config"
    with Server(exported.base, port=0, rest_port=0, poll_interval_s=0, monitoring_config_file=config) as server, \
            Client(server.target, "din", spec=exported.spec) as client:
        client.predict({k: v[:2] for k, v in exported.batch.items()})
        rest = f"http://{server.host}:{server.rest_port}"
        body = json.dumps({"instances": [{"b64": ""}]}).encode()
        for name in ("din", "nope"):
            try:
                urllib.request.urlopen(urllib.request.Request(f"{rest}/v1/models/{name}:predict", data=body),
                                       timeout=TIMEOUT)
            except urllib.error.HTTPError:
                pass
        status, text = get(f"{rest}/monitoring/prometheus/metrics")
    assert status == 200
    series = parse_prometheus(text)
    count = ":tensorflow:serving:request_count"
    assert series[(count, (("model_name", "din"), ("status", "OK")))] == 1  # the gRPC predict
    assert series[(count, (("model_name", "din"), ("status", "INVALID_ARGUMENT")))] == 1  # the empty example
    assert series[(count, (("model_name", "nope"), ("status", "NOT_FOUND")))] == 1
    latency = ":tensorflow:serving:request_latency"
    grpc_labels = (("model_name", "din"), ("API", "predict"), ("entrypoint", "GRPC"))
    assert series[(f"{latency}_count", grpc_labels)] == 1
    assert series[(f"{latency}_bucket", grpc_labels + (("le", "+Inf"),))] == 1
    assert 0 < series[(f"{latency}_sum", grpc_labels)] < 60e6  # microseconds
    din_path = str(exported.base / "din" / "1")
    assert series[(":tensorflow:cc:saved_model:load_attempt_count", (("model_path", din_path), ("status", "success")))] == 1
    assert series[(":tensorflow:cc:saved_model:load_latency", (("model_path", din_path),))] > 0
    assert series[(":tfrec_onerec:serving:available_versions", (("model_name", "din"),))] == 1


def test_metrics_are_off_without_a_monitoring_config(server):
    status, _ = get(f"http://{server.host}:{server.rest_port}/monitoring/prometheus/metrics")
    assert status == 404


def test_metadata_the_readiness_probe_asks_is_404_until_a_version_is_available(exported, tmp_path):
    base = tmp_path / "models"
    broken = base / "din" / "1"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    with Server(base, port=0, rest_port=0, poll_interval_s=0) as server:
        rest = f"http://{server.host}:{server.rest_port}/v1/models/din"
        status, text = get(rest)
        assert status == 200 and json.loads(text)["model_version_status"][0]["state"] == "END"  # as TF Serving
        assert get(f"{rest}/metadata")[0] == 404
        shutil.copytree(exported.base / "din" / "1", base / "din" / "2")
        server.manager.poll()
        assert get(f"{rest}/metadata")[0] == 200


# -- model life cycle: retries, warmup limit, vanishing folders, strict start, config re-reads ------
def test_a_failed_load_is_retried_on_a_timer_with_backoff_then_given_up(exported):
    calls = []

    def flaky(failures):
        def loader(name, version, path):
            calls.append(time.monotonic())
            if len(calls) <= failures:
                raise OSError("the storage hiccuped")
            return Servable(name, version, path)
        return loader

    config = [ModelConfig("din", str(exported.base / "din"))]
    manager = ModelManager(config, poll_interval_s=0, warmup=False, loader=flaky(2), load_retry_interval_s=0.3)
    manager.start()
    assert manager.status(model_spec("din", None, None))[0][1].state == "END"
    manager.poll()  # before the first retry is due: no attempt
    assert len(calls) == 1
    for _ in range(40):
        time.sleep(0.1)
        manager.poll()
        if manager.unavailable_models() == []:
            break
    manager.stop()
    assert len(calls) == 3 and calls[2] - calls[1] >= 2 * (calls[1] - calls[0]) * 0.9 >= 0.27  # 0.3 s, then 0.6 s
    calls.clear()
    manager = ModelManager(config, poll_interval_s=0, warmup=False, loader=flaky(100), max_load_retries=1,
                           load_retry_interval_s=0.05)
    manager.start()
    for _ in range(10):
        time.sleep(0.06)
        manager.poll()
    manager.stop()
    assert len(calls) == 2  # the first load and one retry


def test_more_than_1000_warmup_records_fail_the_load(exported, tmp_path):
    import tensorflow as tf

    version = tmp_path / "models" / "din" / "1"
    shutil.copytree(exported.base / "din" / "1", version)
    warmup = version / "assets.extra" / WARMUP_FILE
    record = next(iter(tf.data.TFRecordDataset(str(warmup)))).numpy()
    with tf.io.TFRecordWriter(str(warmup)) as writer:
        for _ in range(MAX_WARMUP_RECORDS + 1):
            writer.write(record)
    manager = ModelManager.from_base(tmp_path / "models", poll_interval_s=0).start()
    (status,) = manager.status(model_spec("din", None, None))
    manager.stop()
    assert status[1].state == "END" and "More than 1000 warmup records" in status[1].error_message


def test_a_folder_vanishing_mid_scan_spares_the_other_models(exported, tmp_path, monkeypatch):
    base = copy_base(exported, tmp_path / "models")
    assert model_manager._directory_stamp(tmp_path / "gone") == ()
    assert version_dirs(tmp_path / "gone") == {}
    real_stamp = model_manager._directory_stamp

    def vanishing(path):
        if path.parent.name == "din":
            raise FileNotFoundError(path)  # as an unguarded look into a deleted folder did
        return real_stamp(path)

    monkeypatch.setattr(model_manager, "_directory_stamp", vanishing)
    manager = ModelManager.from_base(base, poll_interval_s=0, warmup=False).start()
    assert manager.unavailable_models() == ["din"]
    manager.stop()


def test_fail_on_load_error_refuses_to_start_without_every_model(exported, tmp_path):
    base = copy_base(exported, tmp_path / "models")
    broken = base / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    with pytest.raises(RuntimeError, match=r"No version of model\(s\) broken could be loaded"):
        Server(base, port=0, rest_port=None, poll_interval_s=0, fail_on_load_error=True).start()
    with Server(base, port=0, rest_port=None, poll_interval_s=0) as server:  # without it: serve what loads
        assert server.manager.unavailable_models() == ["broken"]


def test_the_models_config_is_reread_and_a_broken_one_keeps_the_served_set(exported, tmp_path):
    config = tmp_path / "models.config"

    def write(*names):
        entries = " ".join(f"config {{ name: '{n}' base_path: '{exported.base / n}' model_platform: 'tensorflow' }}"
                           for n in names)
        config.write_text(f"model_config_list {{ {entries} }}")

    def wait_for(names):
        for _ in range(100):
            if server.manager.model_names == names:
                return True
            time.sleep(0.1)
        return False

    write("din")
    with Server(model_config_file=config, port=0, rest_port=None, poll_interval_s=0,
                config_poll_interval_s=0.1) as server:
        assert server.manager.model_names == ["din"]
        write("din", "toy")
        assert wait_for(["din", "toy"])
        config.write_text("model_config_list { config { name: ")  # a half-written file
        time.sleep(0.5)
        assert server.manager.model_names == ["din", "toy"]
        write("toy")
        assert wait_for(["toy"])


def test_a_slow_load_delays_no_other_model(exported, tmp_path):
    base = tmp_path / "models"
    (base / "slow").mkdir(parents=True)
    (base / "fast").mkdir()
    release = threading.Event()

    def loader(name, version, path):
        if name == "slow":
            release.wait(30)
        return Servable(name, version, path)

    manager = ModelManager.from_base(base, poll_interval_s=0.05, warmup=False, loader=loader).start()
    try:
        shutil.copytree(exported.base / "din" / "1", base / "slow" / "1")
        time.sleep(0.3)  # the slow model's load has begun and hangs
        shutil.copytree(exported.base / "din" / "1", base / "fast" / "1")
        for _ in range(100):
            if manager.unavailable_models() == ["slow"]:
                break
            time.sleep(0.1)
        assert manager.unavailable_models() == ["slow"]  # the fast model serves while the slow one loads
        release.set()
        for _ in range(100):
            if not manager.unavailable_models():
                break
            time.sleep(0.1)
        assert not manager.unavailable_models()
    finally:
        release.set()
        manager.stop()


# -- the request path's shortcuts give what the public calls give ----------------------------------
def test_the_fast_signature_call_and_output_encoding_equal_the_public_ones(exported):
    import numpy as np
    import tensorflow as tf

    from tfrec_onerec.serving.tensors import encode

    servable = Servable("din", 1, exported.base / "din" / "1")
    feeds = {"predict": {k: tf.constant(v) for k, v in exported.batch.items()},
             "serving_default": {"examples": tf.constant(np.array(exported.examples, dtype=object))}}
    for key, tensors in feeds.items():
        assert servable._callers[key] is not None  # the shortcut is in use on this TensorFlow
        fast, public = servable.call(key, tensors), servable.function(key)(**tensors)
        assert fast.keys() == public.keys()
        for name in public:
            np.testing.assert_array_equal(fast[name].numpy(), public[name].numpy())
    for value in (np.random.default_rng(0).random((3, 1)).astype("float32"), np.arange(6).reshape(2, 3),
                  np.array([True, False]), np.float64(2.5), np.zeros((0, 4), "int32"), np.arange(4, dtype=">i4"),
                  np.array([b"a", b"bc"], dtype=object)):
        ours, theirs = encode(value), tf.make_tensor_proto(np.asarray(value))
        assert (ours.dtype, ours.tensor_shape) == (theirs.dtype, theirs.tensor_shape)
        np.testing.assert_array_equal(tf.make_ndarray(ours), tf.make_ndarray(theirs))
