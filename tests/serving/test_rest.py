"""TF Serving's REST API over loopback: both JSON formats, agreement with gRPC, status codes."""
import base64
import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from tfrec_onerec.serving import Server

from serving_helpers import assert_same


def call(port, path, body=None, raw=None):
    """``(HTTP status, JSON answer)`` of a GET (no body) or POST."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def rows(batch, n):
    return [{k: v[i].tolist() for k, v in batch.items()} for i in range(n)]


def b64(records):
    return [{"b64": base64.b64encode(r).decode()} for r in records]


def test_row_and_columnar_formats_agree_with_grpc(server, client, exported):
    port = server.rest_port
    grpc_scores = client.predict(exported.batch)["click"]
    assert_same({"click": grpc_scores}, exported.expected(1))
    answers = [
        call(port, "/v1/models/din:predict", {"instances": b64(exported.examples)}),
        call(port, "/v1/models/din/versions/1:predict", {"inputs": {"examples": b64(exported.examples)}}),
        call(port, "/v1/models/din:predict", {"signature_name": "predict", "instances": rows(exported.batch, 16)}),
        call(port, "/v1/models/din:predict", {"signature_name": "predict",
                                              "inputs": {k: v.tolist() for k, v in exported.batch.items()}}),
    ]
    assert [status for status, _ in answers] == [200] * 4, answers
    row_answers = [np.array(a["predictions"], np.float32) for _, a in answers[0::2]]
    columnar = [np.array(a["outputs"], np.float32) for _, a in answers[1::2]]
    for scores in row_answers + columnar:
        np.testing.assert_array_equal(scores, grpc_scores)  # JSON floats carry float32 exactly


def test_status_and_metadata_json(server):
    port = server.rest_port
    assert call(port, "/v1/models/din") == (200, {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]})
    assert call(port, "/v1/models/din/versions/1")[0] == 200
    status, metadata = call(port, "/v1/models/din/metadata")
    assert status == 200 and metadata["model_spec"] == {"name": "din", "signature_name": "", "version": "1"}
    signatures = metadata["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "predict"} <= set(signatures)
    assert signatures["serving_default"]["inputs"]["examples"]["dtype"] == "DT_STRING"
    assert signatures["serving_default"]["method_name"] == "tensorflow/serving/predict"


def test_classify_and_regress_json(server):
    port = server.rest_port
    status, answer = call(port, "/v1/models/toy:regress", {"signature_name": "regress",
                                                           "examples": [{"x": 1.0}, {"x": -0.5}]})
    assert (status, answer) == (200, {"results": [3.0, 0.0]})
    status, answer = call(port, "/v1/models/toy:classify", {"signature_name": "classify", "context": {"x": 0.0},
                                                            "examples": [{}]})
    assert status == 200 and answer == {"results": [[["negative", 0.5], ["positive", 0.5]]]}


BAD_REQUESTS = [
    # (id, path, body, HTTP status, words of the error)
    ("unknown model", "/v1/models/nope:predict", {"instances": []}, 404,
     "Servable not found for request: Latest(nope)"),
    ("unknown version", "/v1/models/din/versions/4:predict", {"instances": []}, 404, "Specific(din, 4)"),
    ("unknown model status", "/v1/models/nope", None, 404, "Could not find any versions of model nope"),
    ("unknown signature", "/v1/models/din:predict", {"signature_name": "x", "instances": []}, 400,
     'Serving signature name: "x" not found in signature def'),
    ("no instances or inputs", "/v1/models/din:predict", {"signature_name": "predict"}, 400, "exactly one of"),
    ("missing input", "/v1/models/din:predict", {"signature_name": "predict", "instances": [{"user_id": 1}]}, 400,
     "Missing but required: {hist_cat,hist_item_id,item_cat,item_id}"),
    ("text for an id", "/v1/models/din:predict", {"signature_name": "predict", "inputs": {
        "user_id": ["a"], "item_id": [1], "item_cat": [1], "hist_item_id": [[1] * 6], "hist_cat": [[1] * 6]}}, 400,
     "Input user_id: expected int64 values, got text."),
    ("fraction for an id", "/v1/models/din:predict", {"signature_name": "predict", "inputs": {
        "user_id": [1], "item_id": [1.5], "item_cat": [1], "hist_item_id": [[1] * 6], "hist_cat": [[1] * 6]}}, 400,
     "Input item_id: expected int64 values, got fractional numbers."),
    ("id beyond 64 bits", "/v1/models/din:predict", {"signature_name": "predict", "inputs": {
        "user_id": [1], "item_id": [10 ** 30], "item_cat": [1], "hist_item_id": [[1] * 6], "hist_cat": [[1] * 6]}},
     400, "Input item_id: values out of range for int64."),
    ("version beyond 64 bits", "/v1/models/din/versions/99999999999999999999:predict", {"instances": []}, 400,
     "Model version 99999999999999999999 is out of the int64 range."),
    ("feature beyond 64 bits", "/v1/models/toy:classify", {"examples": [{"x": 10 ** 30}]}, 400,
     "Feature x: an integer is out of the int64 range."),
    ("ragged history", "/v1/models/din:predict", {"signature_name": "predict", "inputs": {
        "user_id": [1, 2], "item_id": [1, 2], "item_cat": [1, 2], "hist_item_id": [[1] * 6, [1] * 5],
        "hist_cat": [[1] * 6] * 2}}, 400, "Input hist_item_id: lists of different lengths"),
    ("short history", "/v1/models/din:predict", {"signature_name": "predict", "instances": [
        {"user_id": 1, "item_id": 1, "item_cat": 1, "hist_item_id": [1] * 5, "hist_cat": [1] * 6}]}, 400,
     "Input hist_item_id: expected shape [-1, 6]"),
    ("bad base64", "/v1/models/din:predict", {"instances": [{"b64": "%%%"}]}, 400, "invalid base64"),
    ("not a tf.Example", "/v1/models/din:predict", {"instances": ["hello"]}, 400,
     "Input examples: Could not parse example input"),
    ("both version and label", "/v1/models/din/versions/1/labels/x:predict", {"instances": []}, 400, "Malformed"),
    ("unknown method", "/v1/models/din:explain", {"instances": []}, 400, "Malformed request: POST"),
    ("outside /v1", "/v2/models/din:predict", {"instances": []}, 404, "No such endpoint"),
    ("classify a predict signature", "/v1/models/din:classify", {"examples": [{"x": 1}]}, 400,
     "No classification inputs found"),
]


@pytest.mark.parametrize("path, body, status, message", [r[1:] for r in BAD_REQUESTS], ids=[r[0] for r in BAD_REQUESTS])
def test_bad_requests_get_tf_serving_http_statuses(server, exported, path, body, status, message):
    got_status, answer = call(server.rest_port, path, body)
    assert got_status == status, answer
    assert message in answer["error"], answer
    ok, _ = call(server.rest_port, "/v1/models/din:predict", {"instances": b64(exported.examples[:2])})
    assert ok == 200


def test_malformed_json_and_size_limit(exported):
    with Server(exported.base, port=0, rest_port=0, poll_interval_s=0, max_request_bytes=4096) as small:
        status, answer = call(small.rest_port, "/v1/models/din:predict", raw=b"{not json")
        assert status == 400 and answer["error"].startswith("JSON Parse error")
        status, answer = call(small.rest_port, "/v1/models/din:predict", {"instances": b64(exported.examples * 20)})
        assert status == 413 and "larger than the limit of 4096 bytes" in answer["error"]
        status, answer = call(small.rest_port, "/v1/models/din:predict", {"instances": b64(exported.examples[:1])})
        assert status == 200 and len(answer["predictions"]) == 1
