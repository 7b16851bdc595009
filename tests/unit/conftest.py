"""The unit tier runs no process, server or cluster: each test here is logic on values, files in a temporary
folder, and in-process objects. The guard below makes a test that starts one fail with where it belongs."""

from __future__ import annotations

import socket
import subprocess

import pytest


def _refuse(what: str):
    def refuse(*args, **kwargs):
        raise RuntimeError(f"a unit test {what}: that belongs in tests/stages/ (or tests/e2e/), not tests/unit/")
    return refuse


@pytest.fixture(autouse=True)
def _no_processes_or_network(monkeypatch):
    monkeypatch.setattr(subprocess.Popen, "_execute_child", _refuse("started a process"))
    monkeypatch.setattr(socket.socket, "bind", _refuse("opened a server socket"))
    monkeypatch.setattr(socket.socket, "connect", _refuse("made a network connection"))
    try:
        import ray
    except ImportError:
        return
    monkeypatch.setattr(ray, "init", _refuse("started or joined a Ray cluster"))
