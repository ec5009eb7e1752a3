"""Sound caching: the package's code in the Transform/Trainer cache key, a Pusher that checks
its destination on every run; pushes to remote URIs (TensorFlow's in-memory ``ram://``)."""
import json
import shutil
import uuid
from pathlib import Path

import pytest
import tensorflow as tf
import tfx  # noqa: F401  (before TFDV/TFMA, see docs/STACK.md)

from tfrec_onerec import export
from tfx_pipelines import fingerprint, pusher


@pytest.fixture
def sources(tmp_path):
    """A copy of the package's source trees."""
    roots = []
    for root in fingerprint.package_roots():
        roots.append(Path(shutil.copytree(root, tmp_path / "copy" / root.name,
                                          ignore=shutil.ignore_patterns("__pycache__"))))
    return roots


def test_fingerprint_covers_every_source_file_and_the_version(sources, tmp_path):
    before = fingerprint.source_fingerprint(sources)
    assert before == fingerprint.source_fingerprint(fingerprint.package_roots())  # the code, not its location
    assert before == fingerprint.source_fingerprint(list(reversed(sources)))  # stable order
    assert fingerprint.source_fingerprint(sources, version="9.9.9") != before
    (sources[0] / "__pycache__").mkdir(exist_ok=True)
    (sources[0] / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"compiled")
    (sources[0] / "notes.txt").write_text("not code")
    assert fingerprint.source_fingerprint(sources) == before
    trainer = sources[1] / "trainer.py"
    assert sources[1].name == "tfx_pipelines" and trainer.is_file()
    trainer.write_text(trainer.read_text() + "\n# a change\n")
    changed = fingerprint.source_fingerprint(sources)
    assert changed != before
    nested = next(p for p in sorted(sources[0].rglob("*.py")) if p.parent != sources[0])  # a subpackage's file
    nested.write_text(nested.read_text() + "\n")
    assert fingerprint.source_fingerprint(sources) not in (before, changed)
    (sources[0] / "added.py").write_text("")
    assert len({fingerprint.source_fingerprint(sources), before, changed}) == 3


def custom_configs(config) -> dict:
    from tfx_pipelines.pipeline import create_pipeline

    return {c.id: json.loads(c.exec_properties["custom_config"]) for c in create_pipeline(config).components
            if c.id in ("Transform", "Trainer", "Pusher")}


def test_transform_and_trainer_custom_config_carry_the_source_fingerprint(data_dir, tmp_path, monkeypatch):
    import tfx_pipelines.pipeline as pipeline_module
    from tfx_pipelines.pipeline import PipelineConfig, trainer_config

    config = PipelineConfig(model="din", data=str(data_dir), pipeline_root=str(tmp_path / "root"),
                            serving_dir=str(tmp_path / "serving"))
    current = fingerprint.source_fingerprint()
    assert trainer_config(config, config.spec())["source_fingerprint"] == current
    first = custom_configs(config)
    assert first["Transform"]["source_fingerprint"] == first["Trainer"]["source_fingerprint"] == current

    monkeypatch.setattr(pipeline_module, "source_fingerprint", lambda: "changed code")
    changed = custom_configs(config)
    assert changed["Transform"]["source_fingerprint"] == changed["Trainer"]["source_fingerprint"] == "changed code"
    assert {k: v for k, v in changed["Trainer"].items() if k != "source_fingerprint"} == \
        {k: v for k, v in first["Trainer"].items() if k != "source_fingerprint"}
    # The Pusher is never served from the cache: a new nonce for every pipeline built.
    assert first["Pusher"][pusher.CHECK_KEY] != changed["Pusher"][pusher.CHECK_KEY]


def fake_model(directory, files=3) -> str:
    """A SavedModel-shaped directory (local path or URI) with its own fingerprint.pb."""
    directory = str(directory)
    tf.io.gfile.makedirs(f"{directory}/variables")
    for i in range(files):
        with tf.io.gfile.GFile(f"{directory}/variables/shard-{i}", "wb") as handle:
            handle.write(b"x" * 100)
    for name, content in (("saved_model.pb", b"graph"), ("fingerprint.pb", directory.encode())):
        with tf.io.gfile.GFile(f"{directory}/{name}", "wb") as handle:
            handle.write(content)
    return directory


def tree(uri) -> list:
    out = []
    for directory, _, files in tf.io.gfile.walk(uri):
        out += [f"{directory}/{name}"[len(uri) + 1:] for name in files]
    return sorted(out)


def test_push_to_a_remote_uri_and_from_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = f"ram://serving-{uuid.uuid4().hex[:8]}/din"
    local_model = fake_model(tmp_path / "model")
    first = pusher.push_atomically(local_model, base)
    assert first == f"{base}/1" and export.versions(base) == [1]
    assert tree(first) == ["fingerprint.pb", "saved_model.pb"] + [f"variables/shard-{i}" for i in range(3)]
    assert pusher.already_pushed(local_model, base) == first and pusher.push_atomically(local_model, base) == first
    remote_model = fake_model(f"ram://artifacts-{uuid.uuid4().hex[:8]}/Trainer/model/7/Format-Serving")
    assert pusher.push_atomically(remote_model, base + "/") == f"{base}/2"
    assert sorted(tf.io.gfile.listdir(base)) == ["1", "2"]  # no staging left
    local_base = tmp_path / "serving" / "din"
    pushed = pusher.push_atomically(remote_model, str(local_base))
    assert pushed == local_base / "1" and (pushed / "variables" / "shard-2").read_bytes() == b"x" * 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "serving"]  # no local "ram:" folder


def test_failed_remote_push_leaves_nothing_and_keeps_served_versions(tmp_path, monkeypatch):
    base = f"ram://serving-{uuid.uuid4().hex[:8]}/din"
    pusher.push_atomically(fake_model(tmp_path / "model"), base)
    retrained = fake_model(tmp_path / "retrained")
    copy = tf.io.gfile.copy

    def failing_copy(source, destination, overwrite=False):  # the move into <base>/2 fails half-way
        if "/2/" in destination and destination.endswith("saved_model.pb"):
            raise tf.errors.UnavailableError(None, None, "connection reset")
        return copy(source, destination, overwrite)

    monkeypatch.setattr(tf.io.gfile, "copy", failing_copy)
    with pytest.raises(tf.errors.UnavailableError, match="connection reset"):
        pusher.push_atomically(retrained, base)
    assert tf.io.gfile.listdir(base) == ["1"] and export.versions(base) == [1]
