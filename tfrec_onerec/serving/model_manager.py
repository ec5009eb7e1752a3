"""Loading model versions, polling for new ones, and swapping them in without dropping requests.

The manager keeps, per model, the map of versions being served. Requests take a *handle*
(a reference count) on one version for the time they run. A poll (every
``poll_interval_s`` seconds, on a background thread) lists the versions on disk, loads the
ones the version policy wants and does not serve yet, replays their TF Serving warmup
records, and then replaces the model's map in one step under a lock. A version that left
the map is unloaded when its last handle is released, so a request that started on it
finishes on it. As TF Serving's availability-preserving policy does, a version is retired
only once a wanted version is available: if the new version fails to load, the old one
keeps serving.

Version states follow TF Serving's ``ModelVersionStatus``: LOADING, AVAILABLE, UNLOADING,
END (with the load error, if any).
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Callable, Sequence

from tfrec_onerec.serving import config as model_config
from tfrec_onerec.serving.status import ServingError, invalid_argument, not_found

log = logging.getLogger(__name__)

WARMUP_FILE = "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit
SERVE_TAG = "serve"


@dataclasses.dataclass
class VersionState:
    """One version's state, as GetModelStatus reports it."""
    state: str
    error_code: str = "OK"
    error_message: str = ""


def read_signature_defs(path: Path) -> dict:
    """``{key: SignatureDef}`` of the ``serve`` MetaGraph in a SavedModel folder."""
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    if (path / "saved_model.pb").is_file():
        saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
    else:
        text_format.Parse((path / "saved_model.pbtxt").read_text(), saved_model)
    for meta_graph in saved_model.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ValueError(f"{path}: no MetaGraph tagged {SERVE_TAG!r} in the SavedModel.")


class Servable:
    """One loaded version of a model.

    Args:
        name: the model name.
        version: the version number.
        path: the version's SavedModel folder.

    Attributes:
        signature_defs: ``{key: SignatureDef}`` as written in the SavedModel (metadata and
            request checks use these).
    """

    def __init__(self, name: str, version: int, path: Path):
        import tensorflow as tf

        self.name, self.version, self.path = name, version, Path(path)
        self.signature_defs = read_signature_defs(self.path)
        self._loaded = tf.saved_model.load(str(self.path), tags=[SERVE_TAG])
        self._functions = dict(self._loaded.signatures)
        self._callers = {key: fast_caller(function) for key, function in self._functions.items()}
        self._handles = 0
        self._retired = False

    def has_function(self, key: str) -> bool:
        return key in self._functions

    def function(self, key: str):
        return self._functions[key]

    def call(self, key: str, tensors: dict) -> dict:
        """``{output: tensor}`` of signature `key` on ``{input: tensor}`` of its exact dtypes."""
        caller = self._callers.get(key)
        return caller(tensors) if caller is not None else self._functions[key](**tensors)

    def warmup_records(self) -> list:
        """The PredictionLog records of ``assets.extra/tf_serving_warmup_requests``.

        Raises:
            ServingError: more than 1000 records (TF Serving's limit: it fails the load).
        """
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_log_pb2

        path = self.path / "assets.extra" / WARMUP_FILE
        if not path.is_file():
            return []
        records = list(tf.data.TFRecordDataset(str(path)).take(MAX_WARMUP_RECORDS + 1))
        if len(records) > MAX_WARMUP_RECORDS:
            raise invalid_argument(f"More than {MAX_WARMUP_RECORDS} warmup records in {WARMUP_FILE} "
                                   f"(TF Serving's limit).")
        return [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in records]

    def unload(self):
        if getattr(self, "batcher", None) is not None:
            self.batcher.close()
            self.batcher = None
        self._functions.clear()
        self._loaded = None

    def __repr__(self):
        return f"Servable({self.name!r}, {self.version}, {str(self.path)!r})"


def fast_caller(function):
    """A call of a loaded signature function that skips what its public call redoes on every
    request: binding the keyword arguments to its signature and looking up each captured
    variable's handle (0.3 of the 0.9 ms of a batch-1 DIN call on 2 cores). The inputs must
    already have the signature's dtypes (the request checks ensure it). It uses TensorFlow's
    private ``ConcreteFunction._call_flat``; None (the public call is used) where that is
    missing or the function's inputs are not plain keywords.

    Returns:
        ``tensors -> {output: tensor}``, or None.
    """
    try:
        from tensorflow.python.eager.polymorphic_function.concrete_function import ConcreteFunction

        call_flat = ConcreteFunction._call_flat
        keywords = list(function._arg_keywords)
        captured = list(function.captured_inputs)
        if function._num_positional_args not in (0, len(keywords)) or not keywords:
            return None
    except (AttributeError, ImportError, TypeError):
        return None

    def call(tensors: dict) -> dict:
        return call_flat(function, [tensors[name] for name in keywords], captured)

    return call


def replay_warmup(servable: Servable, max_bytes: int) -> int:
    """Runs the servable's warmup records (Predict, Classify, Regress, MultiInference logs).

    Returns:
        The number of requests replayed.

    Raises:
        ServingError: a warmup request failed; the version is then not served.
    """
    from tfrec_onerec.serving import inference

    runners = {
        "predict_log": lambda log: inference.predict(servable, log.request, max_bytes),
        "classify_log": lambda log: inference.classify(servable, log.request),
        "regress_log": lambda log: inference.regress(servable, log.request),
        "multi_inference_log": lambda log: inference.multi_inference(servable, log.request),
    }
    records = servable.warmup_records()
    for record in records:
        kind = record.WhichOneof("log_type")
        if kind not in runners:
            raise invalid_argument(f"Unsupported warmup log type {kind!r} in {servable.path}.")
        runners[kind](getattr(record, kind))
    return len(records)


def _directory_stamp(path: Path) -> tuple:
    """Changes when a version folder's files change (a failed load is retried then). Files
    deleted while it looks (a version being removed) are left out, not an error."""
    stamp = []
    try:
        for file in path.rglob("*"):
            try:
                info = file.stat()
            except FileNotFoundError:
                continue
            if file.is_file():
                stamp.append((str(file.relative_to(path)), info.st_size, info.st_mtime_ns))
    except FileNotFoundError:
        pass
    return tuple(sorted(stamp))


class ModelManager:
    """Serves the versions of a set of models and keeps them current.

    Args:
        models: the :class:`~tfrec_onerec.serving.config.ModelConfig` s.
        poll_interval_s: seconds between polls of the model folders (0: no polling thread;
            call :meth:`poll` yourself).
        warmup: replay each version's warmup records before serving it.
        max_bytes: the decoded-size limit of one tensor (used by warmup replays).
        loader: builds a :class:`Servable` from ``(name, version, path)`` (tests swap it).
        metrics: the :class:`~tfrec_onerec.serving.metrics.ServingMetrics` that count loads
            and available versions (default: a private set).
        max_load_retries: how many times a failed version is loaded again, `load_retry_interval_s`
            apart and doubling (TF Serving's ``--max_num_load_retries``); its files changing
            starts the count again.
        load_retry_interval_s: seconds before the first retry.
        load_threads: models polled (and loaded) at once; a slow load delays no other model.
        batching: :class:`~tfrec_onerec.serving.batching.BatchingParameters`: each loaded
            version merges concurrent requests (None: no server-side batching).
    """

    def __init__(self, models: Sequence[model_config.ModelConfig], poll_interval_s: float = 1.0,
                 warmup: bool = True, max_bytes: int = 64 << 20, loader: Callable = Servable, metrics=None,
                 max_load_retries: int = 5, load_retry_interval_s: float = 60.0, load_threads: int = 4,
                 batching=None):
        from tfrec_onerec.serving.metrics import ServingMetrics

        self.metrics = metrics if metrics is not None else ServingMetrics()
        self._configs = {m.name: m for m in models}
        self.poll_interval_s = poll_interval_s
        self.warmup = warmup
        self.max_bytes = max_bytes
        self._loader = loader
        self._lock = threading.Lock()          # guards _served, _states, handles
        self._poll_lock = threading.Lock()     # one look for models at a time
        self._model_locks: dict = {}           # name -> Lock: one poll of a model at a time
        self._load_pool = futures.ThreadPoolExecutor(max_workers=load_threads, thread_name_prefix="model-load")
        self._served: dict = {}                # name -> {version: Servable}
        self._states: dict = {}                # name -> {version: VersionState}
        self._failed: dict = {}                # (name, version) -> (stamp, failures, time of the next try)
        self.batching = batching
        self.max_load_retries = max_load_retries
        self.load_retry_interval_s = load_retry_interval_s
        self._stop = threading.Event()
        self._thread = None
        self._discover_from = None

    @classmethod
    def from_base(cls, model_base, **kwargs) -> "ModelManager":
        """Every model under `model_base`; model folders that appear later are served too."""
        manager = cls(model_config.discover_models(model_base), **kwargs)
        manager._discover_from = Path(model_base)
        return manager

    # -- life cycle ----------------------------------------------------------------------------------
    def start(self) -> "ModelManager":
        """Loads what is on disk now (returns when done), then polls in the background."""
        self.poll()
        if self.poll_interval_s > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._poll_loop, name="model-manager-poll", daemon=True)
            self._thread.start()
        return self

    def stop(self):
        """Stops polling and unloads every version (after its in-flight requests)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._load_pool.shutdown(wait=True)
        with self._lock:
            served, self._served = self._served, {}
            for versions in served.values():
                for servable in versions.values():
                    self._retire(servable)
        gc.collect()

    def _poll_loop(self):
        while not self._stop.wait(self.poll_interval_s):
            try:
                self.poll(wait=False)
            except Exception:  # a poll must never end the thread
                log.exception("Polling the model folders failed; retrying in %.1f s", self.poll_interval_s)

    # -- configuration -------------------------------------------------------------------------------
    @property
    def model_names(self) -> list:
        return sorted(self._configs)

    @property
    def configs(self) -> list:
        """The :class:`~tfrec_onerec.serving.config.ModelConfig` s served, by name."""
        return [self._configs[name] for name in sorted(self._configs)]

    def unavailable_models(self) -> list:
        """Names of the models with no version serving requests."""
        with self._lock:
            return [name for name in sorted(self._configs) if not self._served.get(name)]

    def reconfigure(self, models: Sequence[model_config.ModelConfig]):
        """Replaces the served set of models (ModelService.HandleReloadConfigRequest); loads now."""
        with self._poll_lock:
            self._configs = {m.name: m for m in models}
            self._discover_from = None
        self.poll()

    # -- polling -------------------------------------------------------------------------------------
    def poll(self, wait: bool = True):
        """Loads newly wanted versions and retires the ones no longer wanted, for every model.

        Each model is brought up to date on the load pool, on its own: a slow load delays no
        other model, and a model still busy from an earlier poll is skipped this time.

        Args:
            wait: return once every model's poll has finished (False: the background poll).
        """
        with self._poll_lock:
            if self._discover_from is not None and self._discover_from.is_dir():
                for found in model_config.discover_models(self._discover_from):
                    self._configs.setdefault(found.name, found)
            removed = [name for name in list(self._served) if name not in self._configs]
            for name in removed:
                self._swap(name, {})
            configs = list(self._configs.values())
        if removed:
            gc.collect()  # a SavedModel's objects hold reference cycles; free an unloaded one now
        polls = [self._load_pool.submit(self._poll_one, config) for config in configs]
        if wait:
            futures.wait(polls)

    def _poll_one(self, config: model_config.ModelConfig):
        lock = self._model_locks.setdefault(config.name, threading.Lock())
        if not lock.acquire(blocking=False):
            return  # still busy with an earlier poll
        try:
            if self._poll_model(config):
                gc.collect()
        except Exception:  # one model's trouble (a folder vanishing mid-scan...) spares the others
            log.exception("Model %s: polling its folder failed; the next poll tries again", config.name)
        finally:
            lock.release()

    def _poll_model(self, config: model_config.ModelConfig) -> bool:
        """Brings one model up to date; True if its served versions changed."""
        on_disk = model_config.version_dirs(config.base_path)
        wanted = config.wanted(on_disk)
        current = dict(self._served.get(config.name, {}))
        new = {v: current[v] for v in wanted if v in current}
        for version in wanted:
            if version not in new:
                servable = self._load(config.name, version, on_disk[version])
                if servable is not None:
                    new[version] = servable
        if self._configs.get(config.name) is not config:  # reconfigured while loading: drop what was loaded
            for version, servable in new.items():
                if current.get(version) is not servable:
                    servable.unload()
            return False
        if (not new and current) or new.keys() == current.keys():
            return False  # (keep serving the old versions until a wanted one is available)
        self._swap(config.name, new)
        return True

    def _load(self, name: str, version: int, path: Path):
        stamp = _directory_stamp(path)
        failed_stamp, failures, retry_at = self._failed.get((name, version), (None, 0, 0.0))
        if failed_stamp == stamp and (failures > self.max_load_retries or time.monotonic() < retry_at):
            return None  # failed before, unchanged since, and not yet (or no longer) due a retry
        if failed_stamp != stamp:
            failures = 0
        self._set_state(name, version, VersionState("LOADING"))
        start, loaded = time.perf_counter(), False
        try:
            servable = self._loader(name, version, path)
            loaded = True
            self.metrics.record_load(str(path), True, time.perf_counter() - start)
            if self.batching is not None:
                servable.batcher = self._batcher(servable)
            if self.warmup:
                count = replay_warmup(servable, self.max_bytes)
                log.info("Model %s version %d: replayed %d warmup request(s)", name, version, count)
        except Exception as error:  # any failure leaves the version unserved, with its reason
            if not loaded:  # (a failed warmup fails the version, not the SavedModel's load)
                self.metrics.record_load(str(path), False, 0.0)
            code = error.code if isinstance(error, ServingError) else "UNKNOWN"
            message = f"Loading {path} failed: {type(error).__name__}: {error}"
            failures += 1
            retry_at = time.monotonic() + self.load_retry_interval_s * 2 ** (failures - 1)
            log.error("Model %s version %d: %s (%s)", name, version, message,
                      f"retry {failures} of {self.max_load_retries} in {retry_at - time.monotonic():.1f} s"
                      if failures <= self.max_load_retries else "no more retries until its files change")
            self._failed[(name, version)] = (stamp, failures, retry_at)
            self._set_state(name, version, VersionState("END", code, message[:2000]))
            return None
        self._failed.pop((name, version), None)
        log.info("Model %s version %d loaded from %s", name, version, path)
        return servable

    def _batcher(self, servable):
        from tfrec_onerec.serving import inference
        from tfrec_onerec.serving.batching import Batcher

        def on_batch(rows: int, padded: int):
            self.metrics.record_batch(servable.name, rows, padded)

        return Batcher(lambda signature, feeds: inference.call_signature(servable, signature, feeds), self.batching,
                       on_batch)

    def _swap(self, name: str, new: dict):
        with self._lock:
            old = self._served.get(name, {})
            if new:
                self._served[name] = new
            else:
                self._served.pop(name, None)
            for version, servable in new.items():
                self._states.setdefault(name, {})[version] = VersionState("AVAILABLE")
            for version, servable in old.items():
                if new.get(version) is not servable:
                    self._retire(servable)
        self.metrics.available_versions.set((name,), len(new))
        log.info("Model %s now serves version(s) %s", name, sorted(new))

    def _retire(self, servable: Servable):
        """Marks a version UNLOADING, and unloads it now if no request holds it (lock held)."""
        servable._retired = True
        self._states.setdefault(servable.name, {})[servable.version] = VersionState("UNLOADING")
        if servable._handles == 0:
            self._unload(servable)

    def _unload(self, servable: Servable):
        servable.unload()
        self._states[servable.name][servable.version] = VersionState("END")
        log.info("Model %s version %d unloaded", servable.name, servable.version)

    def _set_state(self, name: str, version: int, state: VersionState):
        with self._lock:
            self._states.setdefault(name, {})[version] = state

    # -- requests ------------------------------------------------------------------------------------
    def _resolve(self, model_spec) -> Servable:
        """The servable a ModelSpec asks for (lock held)."""
        name = model_spec.name
        if not name:
            raise invalid_argument("ModelSpec has no name specified.")
        versions = self._served.get(name, {})
        choice = model_spec.WhichOneof("version_choice")
        if choice == "version":
            version = model_spec.version.value
            if version not in versions:
                raise not_found(f"Servable not found for request: Specific({name}, {version})")
            return versions[version]
        if choice == "version_label":
            label = model_spec.version_label
            config = self._configs.get(name)
            if config is None or label not in config.labels:
                raise invalid_argument(f"Unrecognized servable version label: {label}")
            version = config.labels[label]
            if version not in versions:
                raise not_found(f"Servable not found for request: Specific({name}, {version})")
            return versions[version]
        if not versions:
            raise not_found(f"Servable not found for request: Latest({name})")
        return versions[max(versions)]

    @contextlib.contextmanager
    def handle(self, model_spec):
        """Holds the version a ModelSpec asks for while the ``with`` body runs.

        Raises:
            ServingError: NOT_FOUND for an unknown model or version; INVALID_ARGUMENT for
                an empty name or an unknown version label.
        """
        with self._lock:
            servable = self._resolve(model_spec)
            servable._handles += 1
        try:
            yield servable
        finally:
            with self._lock:
                servable._handles -= 1
                if servable._retired and servable._handles == 0:
                    self._unload(servable)

    def status(self, model_spec) -> list:
        """``[(version, VersionState)]`` for GetModelStatus, ascending by version.

        Raises:
            ServingError: NOT_FOUND with TF Serving's messages.
        """
        name = model_spec.name
        if not name:
            raise invalid_argument("ModelSpec has no name specified.")
        with self._lock:
            states = dict(self._states.get(name, {}))
            if model_spec.WhichOneof("version_choice") == "version_label":
                config = self._configs.get(name)
                label = model_spec.version_label
                if config is None or label not in config.labels:
                    raise invalid_argument(f"Unrecognized servable version label: {label}")
                version = config.labels[label]
            elif model_spec.HasField("version"):
                version = model_spec.version.value
            else:
                if not states:
                    raise not_found(f"Could not find any versions of model {name}")
                return sorted(states.items())
        if version not in states:
            raise not_found(f"Could not find version {version} of model {name}")
        return [(version, states[version])]

    def served_versions(self, name: str) -> list:
        with self._lock:
            return sorted(self._served.get(name, {}))
