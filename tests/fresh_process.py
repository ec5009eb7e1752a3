"""Runs a script in a fresh Python process and returns the JSON it prints on its last line.

Exported models must serve where tfrec_onerec is not installed, as TF Serving does; the
tests check that by loading them in a new interpreter. :func:`run_fresh` runs the script,
then checks *in the child* that no module of the ``forbidden`` packages was imported (by
default ``tfrec_onerec``), and on any failure shows the child's stderr.

Example::

    out = run_fresh('''
        import json, sys
        import tensorflow as tf
        payload = json.loads(sys.stdin.read())
        loaded = tf.saved_model.load(payload["path"])
        print(json.dumps(sorted(loaded.signatures)))
    ''', {"path": str(path)})
"""
import json
import subprocess
import sys
import textwrap

import pytest

PACKAGE = ("tfrec_onerec",)

_CHECK = """
import sys as _fresh_sys
_fresh_found = sorted(m for m in _fresh_sys.modules if m.split(".")[0] in {forbidden!r})
if _fresh_found:
    raise SystemExit("run_fresh: the script imported forbidden modules: " + ", ".join(_fresh_found))
"""


def run_fresh(code: str, payload=None, forbidden=PACKAGE, timeout: float = 300, cwd=None):
    """Runs `code` in a new Python interpreter and returns the JSON value of its last stdout line.

    Args:
        code: the script (dedented here, so an indented triple-quoted string works). It
            reads `payload` with ``json.loads(sys.stdin.read())`` and ends by printing one
            JSON value.
        payload: a JSON-serialisable value written to the child's stdin; ``None``: empty stdin.
        forbidden: top-level package names the child must not have imported when `code`
            ends (checked in the child). Default ``("tfrec_onerec",)``; ``()`` for a script
            that uses the package itself (e.g. to configure devices before TensorFlow starts).
        timeout: seconds before the child is killed.
        cwd: the child's working directory; default: this process's.

    Returns:
        The decoded JSON value.
    """
    script = textwrap.dedent(code) + "\n" + _CHECK.format(forbidden=tuple(forbidden))
    result = subprocess.run([sys.executable, "-c", script], input="" if payload is None else json.dumps(payload),
                            capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if result.returncode != 0:
        pytest.fail(f"The fresh Python process exited with status {result.returncode}.\n"
                    f"--- its stderr (end) ---\n{result.stderr[-4000:]}\n--- its stdout (end) ---\n"
                    f"{result.stdout[-1000:]}", pytrace=False)
    lines = result.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        pytest.fail(f"The fresh Python process printed no JSON on its last line.\n--- its stdout (end) ---\n"
                    f"{result.stdout[-2000:]}\n--- its stderr (end) ---\n{result.stderr[-2000:]}", pytrace=False)


def check_ranker_round_trip(model, batch, tmp_path, task: str = "click"):
    """Checks a point-wise ranker's round trips and package-free serving on one batch.

    A ``from_config`` clone with the model's weights, a ``.keras`` save/load and the exported
    SavedModel's ``predict`` signature, loaded in a fresh process without tfrec_onerec, must
    all give the model's `task` scores on the integer features of `batch`.

    Returns:
        The reloaded ``.keras`` model (for checks of its configuration).
    """
    import keras
    import numpy as np

    from tfrec_onerec import export

    expected = keras.ops.convert_to_numpy(model(batch)[task]).reshape(-1)
    clone = type(model).from_config(model.get_config())
    clone(batch)
    clone.set_weights(model.get_weights())
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert type(loaded) is type(model)
    for copy in (clone, loaded):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(copy(batch)[task]).reshape(-1), expected,
                                   rtol=1e-5, atol=1e-7)
    path = export.export_saved_model(model, tmp_path / "export", warmup_batch=batch)
    served = run_fresh("""
        import json, sys
        import tensorflow as tf
        payload = json.loads(sys.stdin.read())
        predict = tf.saved_model.load(payload["path"]).signatures["predict"]
        batch = {k: tf.constant(v, tf.int64) for k, v in payload["batch"].items()}
        print(json.dumps(predict(**batch)[payload["task"]].numpy().reshape(-1).tolist()))
    """, {"path": str(path), "task": task, "batch": {k: np.asarray(v).tolist() for k, v in batch.items()}})
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)
    return loaded
