"""Checks every model of the session-value family must pass: the family's rollouts rank the
policies sensibly, the export plays the same sessions, and a fresh process that never imports
tfrec_onerec serves every signature (:mod:`tfrec_onerec.models.session_policy`)."""
import numpy as np
import pytest

from tfrec_onerec import families
from tfrec_onerec.data.session_steps import SESSION_ITEMS, STATE_FEATURES
from tests.fresh_process import run_fresh

FAMILY = families.get("session_value")

SERVE = """
    import json, sys
    import numpy as np
    import tensorflow as tf
    payload = json.loads(sys.stdin.read())
    loaded = tf.saved_model.load(payload["path"])
    state = {k: tf.constant(np.array(v, np.int64)) for k, v in payload["state"].items()}
    scores = loaded.signatures["score_items"](**state)
    top = loaded.signatures["recommend"](**state)
    one = loaded.signatures["predict"](item_id=top["item_ids"][:, 0], **state)
    print(json.dumps({"value": scores["value"].numpy().tolist(), "ids": top["item_ids"].numpy().tolist(),
                      "top": top["values"].numpy()[:, 0].tolist(), "one": one["value"].numpy()[:, 0].tolist()}))
"""


def check_rollouts_and_export(model, data, export_dir):
    """Plays the valid sessions with `model` and its export (under `export_dir`), and serves
    the export in a fresh process; returns the family's results."""
    results = FAMILY.evaluate(model, data, "valid")
    policies = results["policies"]
    # the oracles bound everything; the model beats random play
    assert policies["oracle_long_term"]["return"] > policies["oracle_myopic"]["return"] > policies["model"]["return"]
    assert policies["model"]["return"] > policies["random"]["return"]
    assert policies["oracle_long_term"]["length"] > policies["oracle_myopic"]["length"]
    assert results["return_vs_logging"] == pytest.approx(policies["model"]["return"] / policies["logging"]["return"])
    path = FAMILY.export(model, export_dir, data)
    again = FAMILY.evaluate_export(export_dir, data, "valid")
    assert again["policies"]["model"]["return"] == pytest.approx(policies["model"]["return"], rel=1e-6)
    state = {name: data.columns("test")[name][:3] for name in STATE_FEATURES}
    expected = model.item_scores(state)["value"].numpy()
    served = run_fresh(SERVE, {"path": str(path), "state": {k: v.tolist() for k, v in state.items()}})
    np.testing.assert_allclose(served["value"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(served["one"], served["top"], rtol=1e-5, atol=1e-5)
    for row, ids in enumerate(served["ids"]):  # never an item the session has shown; the best of the rest
        shown = set(state[SESSION_ITEMS][row][state[SESSION_ITEMS][row] > 0].tolist())
        assert not set(ids) & shown
        rest = [v for item, v in enumerate(expected[row], start=1) if item not in shown]
        assert served["top"][row] == pytest.approx(max(rest), rel=1e-5)
    return results
