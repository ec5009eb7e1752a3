"""The serve/query subcommands, models.config (policies, labels), and the demo's serving step."""
import argparse
import importlib.metadata
import json
import urllib.request
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import model_pb2

from tfrec_onerec import export, models
from tfrec_onerec.serving import Client, Server, cli
from tfrec_onerec.serving.config import ModelConfig, discover_models, load_model_config, parse_model_config

from serving_helpers import assert_same, copy_base, push

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", ["serve", "query"])
def test_subcommands_register_on_a_parser(command, capsys):
    parser = argparse.ArgumentParser(prog="tfrec-onerec")
    cli.add_subcommands(parser.add_subparsers(dest="command", required=True))
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args([command, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: tfrec-onerec {command}" in capsys.readouterr().out
    args = parser.parse_args(["serve", "--model-base", "m", "--port", "0"])
    assert (args.func, args.model_base, args.port, args.rest_port) == (cli.cmd_serve, "m", 0, 8501)


def test_version_policies_and_config_errors(tmp_path):
    assert ModelConfig("m", "p").wanted([3, 1, 2]) == [3]
    assert ModelConfig("m", "p", num_versions=2).wanted([3, 1, 2]) == [2, 3]
    assert ModelConfig("m", "p", policy="all").wanted([2, 1]) == [1, 2]
    assert ModelConfig("m", "p", policy="specific", versions=(1, 5)).wanted([1, 2, 3]) == [1]
    with pytest.raises(ValueError, match="does not parse as a TF Serving ModelServerConfig"):
        parse_model_config("model_config_list { config { nme: 'x' } }")
    with pytest.raises(ValueError, match="names these models more than once: \\['a'\\]"):
        parse_model_config("model_config_list { config { name: 'a' base_path: 'x' } config { name: 'a' "
                           "base_path: 'y' } }")
    with pytest.raises(ValueError, match="model_platform 'pytorch' is not supported"):
        parse_model_config("model_config_list { config { name: 'a' base_path: 'x' model_platform: 'pytorch' } }")
    (tmp_path / "din" / "1").mkdir(parents=True)
    (tmp_path / "din" / "1" / "saved_model.pb").write_bytes(b"")
    (tmp_path / ".hidden").mkdir()
    assert [m.name for m in discover_models(tmp_path)] == ["din"]
    assert [m.name for m in discover_models(tmp_path / "din")] == ["din"]


def test_deploy_models_config_parses():
    configs = load_model_config(REPO / "deploy" / "models.config")
    assert "din" in [c.name for c in configs]
    assert all(c.base_path.endswith(f"/models/{c.name}") for c in configs)


def test_models_config_with_specific_versions_and_labels(exported, tmp_path):
    base = copy_base(exported, tmp_path / "models")
    push(exported.v2, base / "din", 2)
    config = tmp_path / "models.config"
    config.write_text("""
        model_config_list {
          config {
            name: "din"
            base_path: "models/din"
            model_platform: "tensorflow"
            model_version_policy { specific { versions: 1 versions: 2 } }
            version_labels { key: "stable" value: 1 }
            version_labels { key: "canary" value: 2 }
          }
        }""")
    with Server(model_config_file=config, port=0, rest_port=0, poll_interval_s=0) as server, \
            Client(server.target, "din", spec=exported.spec) as client:
        assert client.status() == [(1, "AVAILABLE"), (2, "AVAILABLE")]
        assert server.manager.model_names == ["din"]  # toy is not in the config
        assert_same(client.predict(exported.batch), exported.expected(2))  # latest of the served versions
        assert_same(client.predict(exported.batch, version=1), exported.expected(1))
        request = client.predict_request(exported.batch)
        request.model_spec.version_label = "stable"
        response = client.prediction.Predict(request, timeout=60)
        assert response.model_spec.version.value == 1
        body = json.dumps({"signature_name": "predict", "inputs": {k: v.tolist() for k, v in exported.batch.items()}})
        with urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{server.rest_port}/v1/models/din/labels/canary:predict", body.encode())) as r:
            np.testing.assert_array_equal(np.array(json.loads(r.read())["outputs"], np.float32),
                                          exported.expected(2, "predict")["click"])
        with urllib.request.urlopen(f"http://127.0.0.1:{server.rest_port}/v1/models/din/labels/stable") as r:
            assert json.loads(r.read())["model_version_status"][0]["version"] == "1"
        assert server.manager.status(model_pb2.ModelSpec(name="din", version_label="canary"))[0][0] == 2


@pytest.fixture(scope="module")
def movielens_export(tmp_path_factory):
    """An untrained DIN on MovieLens features, exported as ``models/din/1``, and the tables."""
    from tfrec_onerec.data import movielens

    tables = movielens.load_movielens_100k()
    keras.utils.set_random_seed(0)
    spec = movielens.feature_spec(max_len=20)
    model = models.get("din")(spec, ["click"])
    model(movielens.candidate_columns(tables, 1, 20))
    base = tmp_path_factory.mktemp("movielens") / "models"
    export.export_saved_model(model, base / "din", model_name="din")
    return base, tables


def in_process_top_k(base, tables, user_id, k):
    from tfrec_onerec.data import movielens

    signature = tf.saved_model.load(str(base / "din" / "1")).signatures["predict"]
    columns = movielens.candidate_columns(tables, user_id, 20)
    inputs = set(signature.structured_input_signature[1])
    scores = signature(**{n: tf.constant(v) for n, v in columns.items() if n in inputs})["click"].numpy()
    return cli.top_k(columns["item_id"], scores, k)


def test_demo_query_serves_and_answers_over_grpc(movielens_export, capsys):
    base, tables = movielens_export
    results = cli.demo_query(str(base), "din", user_ids=(1, 405), top_k_items=5, tables=tables)
    out = capsys.readouterr().out
    assert "serving din on gRPC" in out and "server stopped" in out
    for user_id in (1, 405):
        items, scores = in_process_top_k(base, tables, user_id, 5)
        np.testing.assert_array_equal(results[user_id][0], items)
        np.testing.assert_allclose(results[user_id][1], scores, rtol=1e-6)
    title = tables.items.set_index("item_id").loc[results[1][0][0], "title"]
    assert f"1. {title}" in out


@pytest.mark.parametrize("signature", ["serving_default", "predict"])
def test_query_command(movielens_export, capsys, signature):
    base, tables = movielens_export
    with Server(base, port=0, rest_port=None, poll_interval_s=0) as server:
        results = cli.cmd_query(argparse.Namespace(
            model="din", user=[655], top_k=3, server=server.target, model_base=str(base), signature=signature,
            task="click", timeout=60.0, data_path=None))
    items, _ = in_process_top_k(base, tables, 655, 3)
    np.testing.assert_array_equal(results[655][0], items)
    assert capsys.readouterr().out.startswith("user 655:\n   1. ")


def test_deploy_files_reference_each_other():
    import yaml

    deploy = REPO / "deploy"
    compose = yaml.safe_load((deploy / "docker-compose.yml").read_text())
    for volume in compose["services"]["tf-serving"]["volumes"]:
        assert (deploy / volume.split(":")[0]).exists(), volume
    flags = compose["services"]["tf-serving"]["command"]
    kustomization = yaml.safe_load((deploy / "kustomization.yaml").read_text())
    for path in kustomization["resources"] + kustomization["configMapGenerator"][0]["files"]:
        assert (deploy / path).is_file(), path
    deployment = yaml.safe_load((deploy / "kubernetes" / "deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    # the image of the TensorFlow release the models are exported with (deploy/README.md)
    tensorflow = importlib.metadata.version("tensorflow")
    assert container["image"] == compose["services"]["tf-serving"]["image"] == f"tensorflow/serving:{tensorflow}-gpu"
    assert importlib.metadata.version("tensorflow-serving-api") == tensorflow
    assert all(port.startswith("127.0.0.1:") for service in compose["services"].values()
               for port in service.get("ports", []))
    policy = yaml.safe_load((deploy / "kubernetes" / "network-policy.yaml").read_text())
    assert policy["spec"]["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert set(flags) <= set(container["args"])  # the same TF Serving settings in both
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_the_readiness_probe_asks_for_what_only_an_available_version_answers():
    import yaml

    deployment = yaml.safe_load((REPO / "deploy" / "kubernetes" / "deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    for probe in ("readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] == "/v1/models/din/metadata"  # tests/serving/test_hardening.py
