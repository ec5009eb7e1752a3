"""``tfrec-onerec serve`` as its own process, as deployed, for the serving benchmarks."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def server_process(model_base: Path, *options: str):
    """Runs ``python -m tfrec_onerec.serving serve`` over `model_base` on free ports with
    `options` (CLI flags); yields ``(gRPC target, REST port or None)`` and stops it on exit."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tfrec_onerec.serving", "serve", "--model-base", str(model_base), "--port", "0",
         "--poll-interval", "0", *options], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = process.stdout.readline()
        found = re.search(r"gRPC on ([\d.]+:\d+)(?:, REST on [\d.]+:(\d+))?", line)
        if not found:
            raise RuntimeError(f"The server did not start: {line!r} (exit code {process.poll()}).")
        yield found.group(1), int(found.group(2)) if found.group(2) else None
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
