"""Thin helpers every stage's Ray wiring uses. Only stage modules import this (logic never imports Ray)."""

from __future__ import annotations

import logging
import os

log = logging.getLogger("codemill")


def ensure_ray(**kwargs):
    """Connect to the cluster this process belongs to (RAY_ADDRESS, set by `ray job submit`), or start a
    local one when run by hand; returns the `ray` module."""
    import ray

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, log_to_driver=True, **kwargs)
        log.info("ray: connected, resources %s", ray.cluster_resources())
    return ray


def data_context(show_progress: bool = True):
    """Ray Data's context with progress bars on (they show in the job logs and the dashboard)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = show_progress
    return ctx
