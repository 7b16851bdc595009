"""Whether the cluster can hold the train stage's workers, and the wait for an autoscaler to bring the rest.

An autoscaling cluster starts with few or no GPU nodes. The stage asks the autoscaler for every worker's
bundle at once (the cluster then scales to fit them, bypassing its usual upscaling pace), logs how many of
the GPUs (and CPUs) are up every `PROGRESS_EVERY_S`, and refuses with what is missing after
`scaling.resource_wait_s`. Ray-free: the stage hands in `cluster_resources` and `request_resources`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from codemill.config import ConfigError
from codemill.train.config import TrainConfig

log = logging.getLogger("codemill.train")

RESOURCE_POLL_S = 5.0
PROGRESS_EVERY_S = 10.0


def needed(cfg: TrainConfig) -> dict[str, float]:
    """The cluster-wide totals the workers take."""
    scaling = cfg.scaling
    need = {"CPU": scaling.num_workers * scaling.cpus_per_worker}
    if scaling.use_gpu:
        need["GPU"] = scaling.num_workers * scaling.gpus_per_worker
    return need


def worker_bundles(cfg: TrainConfig) -> list[dict[str, float]]:
    """One resource bundle per worker: what the autoscaler must fit, node by node."""
    scaling = cfg.scaling
    bundle = {"CPU": scaling.cpus_per_worker, **({"GPU": scaling.gpus_per_worker} if scaling.use_gpu else {})}
    return [dict(bundle) for _ in range(scaling.num_workers)]


def missing_resources(cfg: TrainConfig, have: dict[str, float]) -> str | None:
    """What the cluster lacks for the run's workers, in words; None when it has enough (in total)."""
    short = {k: (v, have.get(k, 0.0)) for k, v in needed(cfg).items() if v > have.get(k, 0.0)}
    if not short:
        return None
    return ", ".join(f"{k}: {n:g} needed, {h:g} in the cluster" for k, (n, h) in short.items())


def progress(cfg: TrainConfig, have: dict[str, float]) -> str:
    """"12 of 192 GPUs are up (96 of 1536 CPUs)": the scarce resource first."""
    need = needed(cfg)
    parts = [f"{have.get(k, 0.0):g} of {v:g} {k}s" for k, v in sorted(need.items(), key=lambda kv: kv[0] != "GPU")]
    return f"{parts[0]} are up" + (f" ({', '.join(parts[1:])})" if parts[1:] else "")


def wait_for_resources(cfg: TrainConfig, cluster_resources: Callable[[], dict[str, float]],
                       request_resources: Callable[[list[dict[str, float]]], None] | None = None,
                       sleep: Callable[[float], None] = time.sleep,
                       clock: Callable[[], float] = time.monotonic) -> bool:
    """Wait until the cluster holds the workers, up to `scaling.resource_wait_s`, asking the autoscaler for
    them first (`request_resources(bundles)`) and logging progress; whether it asked (the caller withdraws
    the request once the workers are done, so the cluster can scale down). Refuses with what is
    missing (ConfigError) when they do not come. With `scaling.trust_autoscaler`, returns at once: Ray Train
    then asks for the workers and waits for them itself, as long as it takes."""
    scaling = cfg.scaling
    if scaling.trust_autoscaler:
        log.info("train: trusting the autoscaler to provide %d workers (Ray Train waits for them)", scaling.num_workers)
        return False
    started = clock()
    have = cluster_resources()
    if missing_resources(cfg, have) is None:
        return False
    if request_resources is not None:
        request_resources(worker_bundles(cfg))
    deadline = started + scaling.resource_wait_s
    each = " + ".join(f"{v:g} {k}" for k, v in worker_bundles(cfg)[0].items())
    log.info("train: %s; asked the autoscaler for %d workers (%s each), waiting up to %.0f s "
             "(scaling.resource_wait_s)", progress(cfg, have), scaling.num_workers, each, scaling.resource_wait_s)
    next_progress = started + PROGRESS_EVERY_S
    while (missing := missing_resources(cfg, have)) is not None:
        now = clock()
        if now >= deadline:
            if request_resources is not None:  # withdrawn: a refused run must not keep the cluster scaling up
                request_resources([])
            hint = (" set scaling.use_gpu=false (with deepspeed.precision=fp32 or bf16) to train on CPUs,"
                    if scaling.use_gpu else "")
            raise ConfigError(f"scaling: the Ray cluster cannot hold {scaling.num_workers} workers ({missing}) "
                              f"after waiting {scaling.resource_wait_s:g} s (scaling.resource_wait_s):{hint} "
                              f"add nodes, raise scaling.resource_wait_s for a slow autoscaler, or set "
                              f"scaling.trust_autoscaler=true to let Ray Train wait without a bound")
        if now >= next_progress:
            log.info("train: %s; waiting for the autoscaler (%.0f s of %.0f s)", progress(cfg, have), now - started,
                     scaling.resource_wait_s)
            next_progress = now + PROGRESS_EVERY_S
        sleep(min(RESOURCE_POLL_S, max(0.0, deadline - now)))
        have = cluster_resources()
    log.info("train: %s after %.0f s", progress(cfg, have), clock() - started)
    return request_resources is not None
