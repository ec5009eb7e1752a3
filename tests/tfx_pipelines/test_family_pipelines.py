"""Every model family through the Beam pipeline to a pushed model the project's server answers over gRPC.

One run per family that TFMA cannot judge (the point-wise family's run is in
test_tfx_pipeline.py): SASRec (next-item), OneRec (generative), the session reward model
(session outcome), SessionLTV and WatchTimeMARL (session value, judged by playing sessions), EMER (ensemble
ranking, judged by the true value of what it shows) and LSIR (social graph, judged on
inactive users) on a small simulated world,
data written as tf.Example by the family (sequences as var-len lists), Transform, the Trainer
driven by the family, the FamilyEvaluator gating on the family's metric, the atomic Pusher.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import tfx  # noqa: F401  (before TFDV/TFMA, see docs/STACK.md)

from tfrec_onerec import families
from tfrec_onerec.export import versions
from tfx_pipelines.family_evaluator import EVALUATION_FILE, judge
from tfx_pipelines.pipeline import PipelineConfig
from tfx_pipelines.runners import run_pipeline

WORLD = {"simulator_users": 300, "simulator_items": 60, "seed": 0}
RUNS = {  # model: (data options, hyperparameters, blessing threshold (None: the family's), served signature, output)
    "sasrec": ({**WORLD, "max_len": 10}, {"embedding_dim": 16}, None, "recommend", "item_ids"),
    "onerec": (WORLD, {"dim": 32, "num_heads": 2, "beam_size": 8, "num_results": 4, "rank_size": 8}, None,
               "recommend", "item_ids"),
    # one epoch of a tiny reward model need not clear the family's 0.55 AUC: the gate's logic is tested below
    "onerec_reward": (WORLD, {"model_dim": 16, "tower_units": [16]}, 0.0, "predict", "swt"),
    # one epoch on 300 users' logs need not beat the logging policy (the family's gate, 1.0)
    "session_ltv": ({**WORLD, "sessions_per_user": 2}, {"state_units": [16], "pair_units": [16], "num_quantiles": 4},
                    0.0, "recommend", "item_ids"),
    # one epoch on 300 users' requests need not beat the formula (the family's gate, 1.0)
    "emer": (WORLD, {"model_dim": 16, "ffn_dim": 16, "head_units": [16]}, 0.0, "rank", "item_ids"),
    # the session-value family's second model: its own road through the same family, no gate either
    "watchtime_marl": ({**WORLD, "sessions_per_user": 2}, {"state_units": [16], "agent_units": 8, "user_units": [16],
                                                          "pair_units": [16], "imagined_samples": 2},
                       0.0, "recommend", "item_ids"),
    # one epoch on 300 users need not clear the family's gate (0.02 inactive NDCG@10)
    "lsir": (WORLD, {"embedding_dim": 16}, 0.0, "recommend", "item_ids"),
}
METRICS = {"sasrec": "recall@10", "onerec": "swt_mean", "onerec_reward": "auc", "session_ltv": "return_vs_logging",
           "emer": "value_vs_formula", "lsir": "inactive ndcg@10", "watchtime_marl": "return_vs_logging"}  # the simulator: ground truth


@pytest.fixture(scope="module", params=sorted(RUNS))
def pushed(request, tmp_path_factory):
    model = request.param
    options, hyperparameters, min_value, _, _ = RUNS[model]
    base = tmp_path_factory.mktemp(f"pipeline-{model}")
    data = families.for_model(model).prepare("simulator", options, directory=base / "data")
    config = PipelineConfig(model=model, data=data.side_dir, pipeline_root=str(base / "root"),
                            serving_dir=str(base / "serving"), epochs=1, hyperparameters=hyperparameters,
                            min_value=min_value,
                            beam_args=("--direct_running_mode=in_memory",))
    run_pipeline(config, "beam")
    return config, data


def evaluation_report(config) -> dict:
    folder = Path(config.pipeline_root, "Evaluator", "evaluation")
    latest = max(folder.iterdir(), key=lambda p: int(p.name))
    return json.loads((latest / EVALUATION_FILE).read_text())


def test_the_family_evaluator_blesses_by_the_family_metric_and_the_model_is_pushed(pushed):
    config, data = pushed
    report = evaluation_report(config)
    family = families.for_model(config.model)
    assert report["family"] == family.name
    assert report["metric"] == METRICS[config.model]
    assert report["blessed"] and report["value"] >= config.threshold
    assert versions(config.model_serving_dir) == [1]
    # The pushed export records what it is and scores the same on the eval split as the evaluator saw.
    info = families.read_export_info(Path(config.model_serving_dir) / "1")
    assert info["model"] == config.model and info["family"] == family.name
    again = family.evaluate_export(Path(config.model_serving_dir) / "1", data, "valid")
    assert family.headline(again) == pytest.approx(report["value"], rel=1e-6)


def test_the_pushed_model_is_served_over_grpc(pushed):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from tfrec_onerec.serving import Server

    config, data = pushed
    *_, signature_name, output = RUNS[config.model]
    columns = data.columns("test")
    loaded = tf.saved_model.load(str(Path(config.model_serving_dir) / "1"))
    signature = loaded.signatures[signature_name]
    inputs = {name: columns[name][:3] for name in signature.structured_input_signature[1]}
    expected = signature(**{k: tf.constant(v) for k, v in inputs.items()})[output].numpy()
    with Server(config.serving_dir, port=0, rest_port=None, poll_interval_s=0) as server:
        request = predict_pb2.PredictRequest()
        request.model_spec.name, request.model_spec.signature_name = config.model, signature_name
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        with grpc.insecure_channel(server.target) as channel:
            reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
    served = tf.make_ndarray(reply.outputs[output])
    np.testing.assert_array_equal(served, expected)
    if output == "item_ids":  # real items of the simulated world
        assert (served > 0).all() and served.max() <= 60
    else:  # a probability per session
        assert served.shape == (3, 1) and ((0 < served) & (served < 1)).all()


def test_the_change_threshold_refuses_a_worse_model():
    assert judge(0.30, None, 0.2, 0.01, True) == (True, [])
    blessed, reasons = judge(0.28, 0.30, 0.2, 0.01, True)
    assert not blessed and "worse than the latest blessed model's 0.3000 by more than 0.0100" in reasons[0]
    blessed, reasons = judge(0.1, None, 0.2, 0.01, True)
    assert not blessed and "below the threshold 0.2000" in reasons[0]
    assert judge(0.295, 0.30, 0.2, 0.01, True)[0]


def test_data_of_another_family_is_refused_before_example_gen(pushed, tmp_path):
    config, data = pushed
    other = "onerec" if config.model != "onerec" else "sasrec"
    with pytest.raises(ValueError, match=f"holds data of the {families.for_model(config.model).name} family"):
        PipelineConfig(model=other, data=config.data, pipeline_root=str(tmp_path / "root"))
