"""Models that own their loss scale it for the replicas of a `tf.distribute` strategy.

Keras sums the gradients of the replicas, so a per-replica *mean* loss must be divided by the
number of replicas (Keras' built-in losses do this; a hand-written ``compute_loss`` must do it
itself, or a 2-replica MirroredStrategy doubles every gradient). Checked on two logical CPUs
(a fresh process: logical devices are configured before TensorFlow starts) for the models of
the next-item and generative families and the multi-task rankers.
"""
from fresh_process import run_fresh


def test_own_losses_are_divided_by_the_replica_count():
    out = run_fresh("""
        import json
        import tfrec_onerec
        import numpy as np
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from tfrec_onerec.families.next_item import next_item_spec
        from tfrec_onerec.models.generative.onerec import OneRec
        from tfrec_onerec.models.sequence.sasrec import SASRec

        rng = np.random.default_rng(0)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        cases = {}
        with strategy.scope():
            sasrec = SASRec(next_item_spec(20, 6, 1).subset(["item_seq"]), dropout=0.0)
            codes = np.stack([np.arange(20) % 4, np.arange(20) // 4, np.zeros(20, int)], axis=1)
            onerec = OneRec(codes, np.arange(1, 21), dim=16, num_heads=2, ffn_dim=16, session_len=2,
                            short_len=4, positive_len=4, dropout=0.0, num_experts=1, top_k=1)
        history = rng.integers(1, 21, (4, 6))
        cases["sasrec"] = (sasrec, {"item_seq": history}, np.roll(history, -1, axis=1))
        user = {"user_id": np.arange(1, 5), "short_item_ids": rng.integers(1, 21, (4, 4)),
                "positive_item_ids": rng.integers(1, 21, (4, 4)), "session_item_ids": rng.integers(1, 21, (4, 2))}
        cases["onerec"] = (onerec, user, user["session_item_ids"])
        from tfrec_onerec.features import Feature, FeatureSpec
        from tfrec_onerec.models.multitask.gated_experts import MMoE

        with strategy.scope():
            mmoe = MMoE(FeatureSpec([Feature("user_id", "categorical", vocab_size=9)], labels=["click", "conversion"]))
        labels = {"click": np.array([1.0, 0.0, 1.0, 1.0]), "conversion": np.array([1.0, 0.0, 0.0, 1.0])}
        cases["mmoe"] = (mmoe, {"user_id": np.arange(1, 5)}, labels)
        found = {}
        for name, (model, x, y) in cases.items():
            x = {k: tf.constant(v, tf.int64) for k, v in x.items()}
            y = {k: tf.constant(v) for k, v in y.items()} if isinstance(y, dict) else tf.constant(y, tf.int64)
            alone = float(model.compute_loss(x, y, model(x, training=False), training=False))
            per_replica = strategy.run(lambda: model.compute_loss(x, y, model(x, training=False), training=False))
            found[name] = [alone] + [float(v) for v in strategy.experimental_local_results(per_replica)]
        print(json.dumps(found))
    """, forbidden=())
    for name, (alone, *replicas) in out.items():
        assert len(replicas) == 2, name
        for value in replicas:  # the same batch on each replica: half the one-device loss each
            assert abs(value - alone / 2) < 1e-5 * max(1.0, alone), (name, alone, replicas)
