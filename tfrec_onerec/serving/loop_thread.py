"""An asyncio event loop on its own thread, for the transports that receive requests on one."""
from __future__ import annotations

import asyncio
import threading
from concurrent import futures
from typing import Coroutine


class LoopThread:
    """Starts a new event loop on a daemon thread named `name`; :meth:`close` ends both."""

    def __init__(self, name: str):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    @classmethod
    def opened_with(cls, name: str, opening: Coroutine) -> "LoopThread":
        """A loop thread that has run `opening` (e.g. binding a server); if that raises,
        the loop is closed and the error raised."""
        started = cls(name)
        try:
            started.run(opening)
        except BaseException:
            started.close()
            raise
        return started

    def submit(self, coroutine: Coroutine) -> futures.Future:
        """Schedules `coroutine` on the loop from any other thread."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def run(self, coroutine: Coroutine):
        """Runs `coroutine` on the loop and returns (or raises) its result."""
        return self.submit(coroutine).result()

    def close(self):
        """Stops the loop, waits for its thread and closes it."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()
