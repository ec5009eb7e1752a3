"""Console output of the command line and the pipelines: quiet by default, ``verbose`` on request.

TFX, Beam and TensorFlow log at INFO from the main process and from every Beam worker
process; TensorFlow's C++ runtime prints start-up notices (oneDNN, CPU feature guard, "could
not find cuda drivers") from each process that loads it. Quiet (the default), the console
shows the program's own output (progress lines, Keras progress bars, results), its own
warnings and every error; all the rest goes to the log files. Verbose, the console shows
everything at INFO as well. The log files always get everything, whichever mode.

Three channels are handled:

* Python logging (``absl``, ``tfx``, ``apache_beam``, ``tensorflow``, ... and the Beam
  workers' records, which Beam forwards to the main process): the root logger is at INFO;
  a console handler lets through, when quiet, WARNING and above from this project and ERROR
  and above from the frameworks; file handlers take everything.
* Python warnings: routed to logging (``py.warnings``); those raised inside installed
  packages count as framework records.
* Native output on file descriptor 2 (TensorFlow's C++ log lines, and everything Beam worker
  processes write to their stderr, which they inherit): when this process's stderr is the
  real one, fd 2 is replaced by a pipe whose reader copies every line to the log files and,
  when quiet, passes to the console only the lines that are not framework log lines
  (tracebacks and Python errors of the workers go through). Python's own ``sys.stderr``
  keeps writing to the console directly (tqdm and Keras progress bars are unaffected).

``TF_CPP_MIN_LOG_LEVEL`` is set for the processes started afterwards (and for this one if
TensorFlow is not loaded yet): 0 (INFO) when verbose; 2 when quiet with the native filter
(warnings and errors reach the log file; the filter hides the known start-up noise), else 3.

This module imports neither TensorFlow nor TFX. Usage::

    from tfrec_onerec.console import configure_output
    configure_output(verbose=False, log_file="logs/run.log")   # once, at start

    with output_session(verbose, "pipelines/din/logs/run-....log"):  # one pipeline run
        ...
"""
from __future__ import annotations

import atexit
import contextlib
import datetime
import io
import logging
import os
import re
import select
import sys
import threading
from pathlib import Path

# Loggers of the frameworks: quiet, only their errors reach the console.
FRAMEWORK_LOGGERS = (
    "absl", "apache_beam", "tensorflow", "tfx", "tfx_bsl", "ml_metadata", "tensorflow_transform",
    "tensorflow_model_analysis", "tensorflow_data_validation", "tensorflow_serving", "keras", "tf_keras",
    "h5py", "jax", "urllib3", "google", "grpc", "py.warnings",
)
FILE_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
VERBOSE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUIET_FORMAT = "%(levelname)s: %(message)s"

# Native log lines (TensorFlow C++ and absl Python format): "I1206 11:05:17.123456  6144 file.cc:31] ...".
# (Before absl::InitializeLog the time reads "00:00:<seconds since the epoch>".)
_NATIVE_LINE = re.compile(rb"^([IWEF])\d{4} \d\d:\d\d:[\d.]+\s+\d+ \S+:\d+\] ")
_NATIVE_NOISE = (
    rb"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    rb"This TensorFlow binary is optimized to use available CPU instructions",
    rb"oneDNN custom operations are on",
)
# Errors of TensorFlow's start-up on a machine without a GPU (cuInit, cuDNN/cuFFT/cuBLAS factories).
_CUDA_NOISE = re.compile(rb"cuInit|cuda|CUDA|cuDNN|cuFFT|cuBLAS|Unable to register")
# A Python warning as `warnings` prints it ("path.py:12: UserWarning: ..."), then indented source.
_PY_WARNING = re.compile(rb"^\S.*:\d+: \w*Warning: ")
# Python logging records of a child process in logging's basic format ("INFO:absl:...").
_BASIC_RECORD = re.compile(rb"^(DEBUG|INFO|WARNING):[\w.]+:")

_lock = threading.RLock()
_state = {"verbose": None, "configured": False}


# -- Python logging ---------------------------------------------------------------------------
def _is_framework(record: logging.LogRecord) -> bool:
    name = record.name
    if name == "py.warnings":  # a warning: framework noise when raised inside an installed package
        text = str(record.msg)
        return "site-packages" in text or "dist-packages" in text
    return any(name == f or name.startswith(f + ".") for f in FRAMEWORK_LOGGERS)


class _QuietFilter(logging.Filter):
    """Quiet console: this project's WARNING+, the frameworks' ERROR+; never file-only records."""

    def filter(self, record):
        if getattr(record, "console", True) is False:
            return False
        if _state["verbose"]:
            return True
        if record.levelno >= logging.ERROR:
            return True
        return record.levelno >= logging.WARNING and not _is_framework(record)


class _ConsoleHandler(logging.StreamHandler):
    """Writes to the current ``sys.stderr`` (whatever it is when the record comes)."""

    def emit(self, record):
        self.stream = sys.stderr
        super().emit(record)


class _LogFileHandler(logging.FileHandler):
    """A log file: every record, and (through :class:`_NativeTee`) the native stderr lines."""

    def write_raw(self, data: bytes):
        text = data.decode("utf-8", "backslashreplace")
        self.acquire()
        try:
            if self.stream is None:
                self.stream = self._open()
            self.stream.write(text)
            self.stream.flush()
        finally:
            self.release()


_console_handler: _ConsoleHandler | None = None
_global_file: _LogFileHandler | None = None
_files: list = []  # the _LogFileHandler s the native tee writes to


def _console() -> _ConsoleHandler:
    global _console_handler
    if _console_handler is None:
        _console_handler = _ConsoleHandler()
        _console_handler.addFilter(_QuietFilter())
    return _console_handler


def _set_verbose(verbose: bool):
    _state["verbose"] = bool(verbose)
    handler = _console()
    handler.setLevel(logging.INFO if verbose else logging.WARNING)
    handler.setFormatter(logging.Formatter(VERBOSE_FORMAT if verbose else QUIET_FORMAT))


def _foreign_console_handlers() -> list:
    """(logger, handler) pairs that would print framework records past our filter.

    absl's handler (when some code called ``absl.logging.use_absl_handler``) and the handler
    TensorFlow adds to its logger when it logs before the root logger has one.
    """
    found = []
    absl_logging = sys.modules.get("absl.logging")
    if absl_logging is not None:
        handler = absl_logging.get_absl_handler()
        if handler in logging.root.handlers:
            found.append((logging.root, handler))
    tf_logger = logging.getLogger("tensorflow")
    found += [(tf_logger, h) for h in tf_logger.handlers if not isinstance(h, logging.FileHandler)]
    return found


def open_log_file(path: str | os.PathLike) -> _LogFileHandler:
    """Adds a log file taking every record (INFO and above) and the native stderr lines."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handler = _LogFileHandler(str(path), encoding="utf-8", delay=False)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    with _lock:
        logging.root.addHandler(handler)
        _files.append(handler)
    return handler


def close_log_file(handler: _LogFileHandler):
    with _lock:
        logging.root.removeHandler(handler)
        if handler in _files:
            _files.remove(handler)
    handler.close()


def log_path(directory: str | os.PathLike, prefix: str = "run") -> Path:
    """A new log file path ``<directory>/logs/<prefix>-<YYYYmmdd-HHMMSS>.log`` (not yet created).

    A remote `directory` (``gs://...``) gives a local path under the temporary directory.
    """
    directory = str(directory)
    if "://" in directory:
        import tempfile

        directory = os.path.join(tempfile.gettempdir(), "tfrec_onerec", re.sub(r"\W+", "_", directory))
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(directory) / "logs" / f"{prefix}-{stamp}.log"
    n = 1
    while path.exists():
        n += 1
        path = path.with_name(f"{prefix}-{stamp}-{n}.log")
    return path


# -- native stderr (fd 2) ---------------------------------------------------------------------
def is_native_noise(line: bytes) -> bool:
    """True for a framework log line on fd 2 that the quiet console hides."""
    stripped = line.lstrip(b"\r")
    if any(stripped.startswith(n) for n in _NATIVE_NOISE[:1]) or any(n in stripped for n in _NATIVE_NOISE[1:]):
        return True
    match = _NATIVE_LINE.match(stripped)
    if match:
        severity = match.group(1)
        return severity in (b"I", b"W") or (severity == b"E" and bool(_CUDA_NOISE.search(stripped)))
    return bool(_BASIC_RECORD.match(stripped))


class _NativeTee:
    """fd 2 -> a pipe; a thread copies each line to the log files and, unless noise, to the console."""

    def __init__(self):
        self.console_fd = os.dup(2)
        self.read_fd, write_fd = os.pipe()
        with contextlib.suppress(OSError, AttributeError):
            import fcntl

            fcntl.fcntl(write_fd, 1031, 1 << 20)  # F_SETPIPE_SZ: 1 MiB, fewer blocked writers
        self.saved_sys_stderr = sys.stderr
        sys.stderr.flush()
        os.dup2(write_fd, 2)
        os.close(write_fd)
        # Python-level stderr keeps going straight to the console.
        sys.stderr = io.TextIOWrapper(io.FileIO(self.console_fd, "w", closefd=False),
                                      encoding=getattr(self.saved_sys_stderr, "encoding", None) or "utf-8",
                                      errors="backslashreplace", line_buffering=True, write_through=True)
        self._skipping = False  # inside a hidden multi-line block (a Python warning's source line)
        self.thread = threading.Thread(target=self._pump, name="tfrec-onerec-stderr", daemon=True)
        self.thread.start()

    def _write_console(self, data: bytes):
        with contextlib.suppress(OSError):
            os.write(self.console_fd, data)

    def _line(self, line: bytes):
        for handler in list(_files):
            with contextlib.suppress(Exception):
                handler.write_raw(line)
        if _state["verbose"]:
            self._write_console(line)
            return
        if self._skipping and line[:1] in (b" ", b"\t"):
            return
        self._skipping = False
        if _PY_WARNING.match(line):
            self._skipping = True
            return
        if not is_native_noise(line):
            self._write_console(line)

    def _pump(self):
        pending = b""
        while True:
            try:
                ready, _, _ = select.select([self.read_fd], [], [], 0.2)
                if not ready:  # a partial line left waiting: let it out (a prompt, a progress bar)
                    if pending:
                        self._line(pending)
                        pending = b""
                    continue
                chunk = os.read(self.read_fd, 1 << 16)
            except InterruptedError:
                continue
            except Exception:  # noqa: BLE001  (keep draining: a full pipe would block the writers)
                chunk = b""
            if not chunk:
                if pending:
                    self._line(pending)
                return
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                try:
                    self._line(line + b"\n")
                except Exception:  # noqa: BLE001
                    pass

    def close(self, timeout: float = 2.0):
        """Gives fd 2 and ``sys.stderr`` back; drains what the pipe holds (children may keep it open)."""
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(self.console_fd, 2)  # our copy of the pipe's write end is closed: EOF once children exit
        if sys.stderr is not self.saved_sys_stderr:
            sys.stderr = self.saved_sys_stderr
        self.thread.join(timeout)
        if not self.thread.is_alive():  # else a child still holds the pipe: the reader keeps forwarding
            for fd in (self.read_fd, self.console_fd):
                with contextlib.suppress(OSError):
                    os.close(fd)


_tee: _NativeTee | None = None


def _can_redirect_native() -> bool:
    """Only a process whose stderr is the real one (not under pytest's capture, not in Jupyter)."""
    try:
        return sys.stderr is sys.__stderr__ and sys.stderr is not None and sys.stderr.fileno() == 2
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return False


def _install_tee() -> bool:
    global _tee
    with _lock:
        if _tee is None and _can_redirect_native():
            try:
                _tee = _NativeTee()
            except OSError:
                _tee = None
        return _tee is not None


def _uninstall_tee():
    global _tee
    with _lock:
        tee, _tee = _tee, None
    if tee is not None:
        tee.close()


def _tf_level(verbose: bool) -> str:
    if verbose:
        return "0"
    return "2" if _tee is not None else "3"


# -- public API -------------------------------------------------------------------------------
def configure_output(verbose: bool = False, log_file: str | os.PathLike | None = None) -> None:
    """Sets the process's console output: quiet (default) or verbose; call once, at start.

    Args:
        verbose: show TensorFlow, TFX and Beam logs at INFO on the console (and TensorFlow's
            C++ notices); False: the program's output, its warnings and errors only.
        log_file: also write every record (and the native stderr lines) to this file.

    Calling it again reconfigures (the handlers are replaced, not added).
    """
    global _global_file
    with _lock:
        _set_verbose(verbose)
        root = logging.getLogger()
        root.setLevel(logging.INFO)
        for logger, handler in _foreign_console_handlers():
            logger.removeHandler(handler)
        if _console() not in root.handlers:
            root.addHandler(_console())
        logging.captureWarnings(True)
        if _global_file is not None:
            close_log_file(_global_file)
            _global_file = None
        _install_tee()
        if log_file is not None:
            _global_file = open_log_file(log_file)
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = _tf_level(verbose)
        if not _state["configured"]:
            atexit.register(_shutdown)
        _state["configured"] = True


def is_verbose() -> bool:
    return bool(_state["verbose"])


def _shutdown():
    global _global_file
    _uninstall_tee()
    if _global_file is not None:
        close_log_file(_global_file)
        _global_file = None


def _absl_verbosity(level: int) -> int:
    """Sets absl's logging verbosity (its logger's level and its ``--verbosity`` flag, which
    TFX and Beam re-apply when they parse flags) to `level`; returns the previous level."""
    from absl import logging as absl_logging

    logger = logging.getLogger("absl")
    previous = logger.level
    absl_logging.set_verbosity(absl_logging.converter.standard_to_absl(level) if level else absl_logging.WARNING)
    logger.setLevel(level)  # exactly (NOTSET included)
    return previous


@contextlib.contextmanager
def output_session(verbose: bool = False, log_file: str | os.PathLike | None = None):
    """Quiet (or verbose) output for one job (a pipeline run), with its own log file.

    In a process that called :func:`configure_output`, only the verbosity (for the job) and
    the log file are added; elsewhere (a library call, a notebook, a test) the console
    handler, the native filter and ``TF_CPP_MIN_LOG_LEVEL`` (for the processes the job
    starts) are set for the job and restored after it.

    Yields:
        The log file's path (or None).
    """
    with _lock:
        configured = _state["configured"]
        previous_verbose = _state["verbose"]
        root = logging.getLogger()
        previous_level = root.level
        previous_env = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
        removed = []
        own_console = own_tee = False
        _set_verbose(verbose)
        if not configured:
            removed = _foreign_console_handlers()
            for logger, handler in removed:
                logger.removeHandler(handler)
            if _console() not in root.handlers:
                root.addHandler(_console())
                own_console = True
            own_tee = _tee is None and _install_tee()
        root.setLevel(logging.INFO)
        previous_absl_level = _absl_verbosity(logging.INFO)  # the records reach the log file; the console filters
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = _tf_level(verbose)
        handler = open_log_file(log_file) if log_file is not None else None
    try:
        yield Path(log_file) if log_file is not None else None
    finally:
        with _lock:
            if handler is not None:
                close_log_file(handler)
            if own_tee:
                _uninstall_tee()
            if own_console:
                root.removeHandler(_console())
            for logger, h in removed:
                logger.addHandler(h)
            _absl_verbosity(previous_absl_level)
            if not configured:
                root.setLevel(previous_level)
                if previous_env is None:
                    os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
                else:
                    os.environ["TF_CPP_MIN_LOG_LEVEL"] = previous_env
                _state["verbose"] = previous_verbose
            elif previous_verbose is not None:
                _set_verbose(previous_verbose)
                os.environ["TF_CPP_MIN_LOG_LEVEL"] = _tf_level(previous_verbose)


def file_only(message: str, *args, logger: str = "tfrec_onerec", level: int = logging.INFO, exc_info=None):
    """Logs a record to the log files only (never to the console)."""
    logging.getLogger(logger).log(level, message, *args, exc_info=exc_info, extra={"console": False})


def is_configured() -> bool:
    """True once :func:`configure_output` ran in this process."""
    return bool(_state["configured"])
