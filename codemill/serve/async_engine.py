"""The engine driven by one background thread, with an asyncio face: `generate` is an async iterator of a
request's outputs. The thread steps the engine while it has work and sleeps on an event otherwise, so HTTP
handling (asyncio) and GPU work overlap. Ray-free: Serve replicas and benchmarks use it alike."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator

from codemill.serve.engine import Engine, GenerationParams, RequestOutput

log = logging.getLogger("codemill.serve")


class AsyncEngine:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="codemill-engine", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stopped.is_set():
            if not self.engine.work.wait(timeout=0.5):
                continue
            try:
                self.engine.step()
            except Exception as exc:  # a failed step fails its requests, never the server
                log.exception("engine step failed")
                self.engine.fail_all(f"the engine failed: {type(exc).__name__}")

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=10)

    async def generate(self, request_id: str, prompt: list[int], params: GenerationParams
                       ) -> AsyncIterator[RequestOutput]:
        """Outputs of one request until its last (`finished`). Raises QueueFull or ValueError at once when
        the request is refused; leaving the iteration early aborts the request."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[RequestOutput] = asyncio.Queue()
        def emit(out: RequestOutput) -> None:  # called on the engine thread
            loop.call_soon_threadsafe(queue.put_nowait, out)

        self.engine.add_request(request_id, prompt, params, emit)
        finished = False
        try:
            while not finished:
                out = await queue.get()
                finished = out.finished
                yield out
        finally:
            if not finished:
                self.engine.abort(request_id)
