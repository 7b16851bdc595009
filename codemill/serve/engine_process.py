"""The engine in a process of its own, and the handle a replica (or a benchmark) holds on it.

Why a process: the engine's host work (scheduling, sampling bookkeeping, detokenisation, stop strings) is
Python, and in the replica's process it would share a GIL with the HTTP event loop (vLLM V1 splits them the
same way). Here the replica's event loop only sends requests and receives one message of outputs per engine
step, already detokenised. Ray-free: the child is a plain `python -m codemill.serve.engine_process` over a
socket pair.

The child loads the export, answers `ready`, then loops: take every message waiting (add, abort, ping),
step the engine while it has work, send that step's outputs. A ping runs a tiny operation on the engine's
device between steps, so a pong proves the step loop turns and the device answers; the replica's
`check_health` is a ping with a deadline. The child dies with its parent (PR_SET_PDEATHSIG), even when
stopped, so a replica Serve kills leaves no engine behind.
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from codemill.serve.coalescer import OutputCoalescer
from codemill.serve.engine import GenerationParams, QueueFull, RequestOutput, StepStats

log = logging.getLogger("codemill.serve")

IDLE_POLL_S = 0.5        # how long an idle engine waits for a message before looking again
STOP_WAIT_S = 10.0       # how long `stop` waits for the child to exit before killing it


class EngineDead(RuntimeError):
    """The engine process exited or cannot be reached; its requests fail and the replica is unhealthy."""


@dataclass(frozen=True)
class EngineSpec:
    """What the child loads: `codemill.serve.loader.load_engine(uri, **options)`."""

    uri: str
    options: dict = field(default_factory=dict)
    stream_interval_s: float = 0.0  # a running request's outputs leave the child at most this often, merged


# ----------------------------------------------------------------------------- the parent's handle
class EngineProcess:
    def __init__(self, spec: EngineSpec, startup_timeout_s: float = 900.0,
                 on_step: Callable[[StepStats], None] | None = None):
        self.on_step = on_step
        self._stopping = False  # set by stop/kill: the connection closing then is no failure
        parent_sock, child_sock = socket.socketpair()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "codemill.serve.engine_process", str(child_sock.fileno()),
                                      str(os.getpid())], pass_fds=(child_sock.fileno(),), env=env)
        child_sock.close()
        self._conn = Connection(parent_sock.detach())
        self._conn.send(spec)
        if not self._conn.poll(startup_timeout_s):
            self.kill()
            raise TimeoutError(f"the engine process did not load {spec.uri} within {startup_timeout_s:.0f} s")
        try:
            kind, payload = self._conn.recv()
        except (EOFError, OSError):
            self.kill()
            raise EngineDead(f"the engine process exited while loading {spec.uri} (exit code "
                             f"{self.proc.wait(timeout=STOP_WAIT_S)})") from None
        if kind != "ready":
            self.kill()
            raise RuntimeError(f"the engine process failed to load {spec.uri}:\n{payload}")
        self.info: dict = payload
        self.dead: str | None = None
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._pings: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future]] = {}
        self._nonce = itertools.count()
        self._lock = threading.Lock()
        # Sends go through a thread: a stopped child fills the socket, and a blocked send must never stall
        # the caller's event loop.
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._send_loop, name="codemill-engine-send", daemon=True).start()
        threading.Thread(target=self._read_loop, name="codemill-engine-read", daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _send_loop(self) -> None:
        while True:
            msg = self._outbox.get()
            if msg is None:
                return
            try:
                self._conn.send(msg)
            except (OSError, ValueError):
                self._mark_dead("the engine process cannot be reached")
                return

    def _read_loop(self) -> None:
        while True:
            try:
                msg = self._conn.recv()
            except (EOFError, OSError):
                code = self.proc.poll()
                self._mark_dead(f"the engine process exited (code {code})" if code is not None else
                                "the engine process closed its connection")
                return
            kind = msg[0]
            if kind == "out":
                self._deliver(msg[1])
                if self.on_step is not None and msg[2] is not None:
                    try:
                        self.on_step(msg[2])
                    except Exception:  # a metric must never stop the thread that delivers every output
                        log.exception("recording an engine step failed")
            elif kind == "refused":
                _, rid, reason, message = msg
                exc = QueueFull(message) if reason == "queue_full" else ValueError(message)
                self._deliver_to(rid, exc)
            elif kind == "pong":
                with self._lock:
                    waiter = self._pings.pop(msg[1], None)
                if waiter is not None:
                    loop, fut = waiter
                    loop.call_soon_threadsafe(_resolve, fut, msg[2])

    def _deliver(self, outputs: list[RequestOutput]) -> None:
        """One engine step's outputs to their streams: one wake-up of each event loop per step."""
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        with self._lock:
            for out in outputs:
                target = self._streams.get(out.request_id)
                if target is not None:
                    by_loop.setdefault(target[0], []).append((target[1], out))
        for loop, items in by_loop.items():
            loop.call_soon_threadsafe(_put_all, items)

    def _deliver_to(self, rid: str, item) -> None:
        with self._lock:
            target = self._streams.get(rid)
        if target is not None:
            target[0].call_soon_threadsafe(target[1].put_nowait, item)

    def _mark_dead(self, why: str) -> None:
        with self._lock:
            if self.dead is not None:
                return
            self.dead = why
            streams, self._streams = list(self._streams.values()), {}
            pings, self._pings = list(self._pings.values()), {}
        (log.info if self._stopping else log.error)("engine: %s", why)
        for loop, q in streams:
            loop.call_soon_threadsafe(q.put_nowait, EngineDead(why))
        for loop, fut in pings:
            loop.call_soon_threadsafe(_fail, fut, EngineDead(why))

    def _send(self, msg: tuple) -> None:
        if self.dead is not None:
            raise EngineDead(self.dead)
        self._outbox.put(msg)

    # ------------------------------------------------------------ the API
    async def generate(self, request_id: str, prompt: list[int], params: GenerationParams
                       ) -> AsyncIterator[RequestOutput]:
        """Outputs of one request until its last (`finished`). Raises QueueFull or ValueError when the engine
        refuses the request, EngineDead when the engine goes away; leaving early aborts the request."""
        q: asyncio.Queue = asyncio.Queue()
        with self._lock:
            if self.dead is not None:
                raise EngineDead(self.dead)
            self._streams[request_id] = (asyncio.get_running_loop(), q)
        finished = False
        try:
            self._send(("add", request_id, prompt, params))
            while not finished:
                item = await q.get()
                if isinstance(item, Exception):
                    finished = True  # refused or dead: nothing to abort
                    raise item
                finished = item.finished
                yield item
        finally:
            with self._lock:
                self._streams.pop(request_id, None)
            if not finished and self.dead is None:
                self._outbox.put(("abort", request_id))

    async def ping(self, timeout_s: float) -> dict:
        """The engine's state, answered between two steps after a tiny operation on its device; raises
        EngineDead or TimeoutError when no answer comes within `timeout_s` (a hung step or device)."""
        if self.proc.poll() is not None:
            self._mark_dead(f"the engine process exited (code {self.proc.returncode})")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        nonce = next(self._nonce)
        with self._lock:
            if self.dead is not None:
                raise EngineDead(self.dead)
            self._pings[nonce] = (loop, fut)
        self._send(("ping", nonce))
        try:
            return await asyncio.wait_for(fut, timeout_s)
        except asyncio.TimeoutError:
            raise TimeoutError(f"the engine did not answer a ping within {timeout_s:g} s (a step or the device "
                               f"hangs)") from None
        finally:
            with self._lock:
                self._pings.pop(nonce, None)

    def stop(self) -> None:
        self._stopping = True
        if self.proc.poll() is None and self.dead is None:
            self._outbox.put(("stop",))
            try:
                self.proc.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> None:
        self._stopping = True
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_WAIT_S)
        self._outbox_close()

    def _outbox_close(self) -> None:
        outbox = getattr(self, "_outbox", None)
        if outbox is not None:
            outbox.put(None)


def _put_all(items: list) -> None:
    for q, out in items:
        q.put_nowait(out)


def _resolve(fut: asyncio.Future, value) -> None:
    if not fut.done():
        fut.set_result(value)


def _fail(fut: asyncio.Future, exc: Exception) -> None:
    if not fut.done():
        fut.set_exception(exc)


# ----------------------------------------------------------------------------- the child
def _die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when its parent exits (Linux), even while it is stopped or hung."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    if os.getppid() != parent_pid:  # the parent died before the call above
        os._exit(1)


def _device_check(engine) -> None:
    import torch

    device = engine.device
    x = torch.ones(8, device=device)
    if float(x.sum()) != 8.0:  # a host sync: a broken device raises or hangs here
        raise RuntimeError("the device computed a wrong sum")


def run_child(conn: Connection) -> None:
    spec: EngineSpec = conn.recv()
    try:
        from codemill.serve.loader import load_engine

        loaded = load_engine(spec.uri, **spec.options)
    except BaseException:
        conn.send(("failed", traceback.format_exc()[-4000:]))
        return
    engine = loaded.engine
    steps: list[StepStats] = []
    engine.on_step = steps.append
    conn.send(("ready", {"memory": loaded.memory, "context_length": loaded.context_length, "pid": os.getpid(),
                         "device": str(engine.device)}))
    outbox = OutputCoalescer(spec.stream_interval_s)
    emit = outbox.add
    while True:
        timeout = 0.0 if engine.has_work() else min(IDLE_POLL_S, spec.stream_interval_s) if outbox.holding \
            else IDLE_POLL_S
        while conn.poll(timeout):
            timeout = 0.0
            msg = conn.recv()
            kind = msg[0]
            if kind == "add":
                _, rid, prompt, params = msg
                try:
                    engine.add_request(rid, prompt, params, emit)
                except QueueFull as exc:
                    conn.send(("refused", rid, "queue_full", str(exc)))
                except ValueError as exc:
                    conn.send(("refused", rid, "invalid", str(exc)))
            elif kind == "abort":
                engine.abort(msg[1])
                outbox.forget(msg[1])
            elif kind == "ping":
                try:
                    _device_check(engine)
                except Exception:
                    log.exception("device check failed")
                    continue  # no pong: the replica's health check fails
                conn.send(("pong", msg[1], {"running": engine.num_running, "waiting": engine.num_waiting,
                                            "time": time.time()}))
            elif kind == "stop":
                return
        if engine.has_work():
            try:
                engine.step()
            except Exception as exc:  # the engine isolates a sequence's failure; this is the last resort
                log.exception("engine step failed")
                engine.fail_all(f"the engine failed: {type(exc).__name__}")
        ready = outbox.due()
        if ready or steps:
            conn.send(("out", ready, steps[-1] if steps else None))  # pickled here: the list can be reused
            steps.clear()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    fd, parent_pid = int(argv[0]), int(argv[1])
    _die_with_parent(parent_pid)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    conn = Connection(fd)
    try:
        run_child(conn)
    except (EOFError, OSError):
        pass  # the parent went away
    return 0


if __name__ == "__main__":
    sys.exit(main())
