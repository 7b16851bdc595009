"""The train stage's wait for its workers against a real Ray head (no GPU node, no autoscaler): the request for
every worker's bundle reaches the cluster in the form Ray's autoscaler reads, progress is logged, and the
refusal comes after `scaling.resource_wait_s` with what is missing and the request withdrawn."""

from __future__ import annotations

import json
import logging

import pytest

from codemill.config import ConfigError, build_config
from codemill.train.capacity import wait_for_resources
from codemill.train.config import TrainConfig


def requested_bundles() -> list[dict]:
    """What the autoscaler would read: Ray's resource-request channel (autoscaler v1) or the GCS's cluster
    resource constraints (v2)."""
    import ray
    from ray.autoscaler.v2.utils import is_autoscaler_v2

    if is_autoscaler_v2():
        from ray.autoscaler.v2.sdk import get_cluster_resource_state

        state = get_cluster_resource_state(ray._private.worker.global_worker.gcs_client)
        return [dict(b.resources_bundle) for c in state.cluster_resource_constraints
                for r in c.resource_requests for b in [r.request] * r.count]
    from ray.autoscaler._private.constants import AUTOSCALER_RESOURCE_REQUEST_CHANNEL
    from ray.experimental.internal_kv import _internal_kv_get

    raw = _internal_kv_get(AUTOSCALER_RESOURCE_REQUEST_CHANNEL)
    return json.loads(raw) if raw else []


def test_a_gpu_run_on_a_cluster_without_gpus_asks_reports_and_is_refused_in_time(ray_session, caplog):
    import ray
    from ray.autoscaler.sdk import request_resources

    cfg = build_config(TrainConfig, {"scaling": {"num_workers": 3, "cpus_per_worker": 2, "resource_wait_s": 12}})
    seen: list[list[dict]] = []

    def request(bundles):
        request_resources(bundles=bundles)
        seen.append(requested_bundles())

    with caplog.at_level(logging.INFO, logger="codemill.train"), \
            pytest.raises(ConfigError, match=r"cannot hold 3 workers \(.*GPU: 3 needed, 0 in the cluster\) after "
                                             r"waiting 12 s"):
        wait_for_resources(cfg, ray.cluster_resources, request)
    assert seen[0] == [{"CPU": 2, "GPU": 1}] * 3, "the autoscaler did not get one bundle per worker"
    assert seen[1] == [], "the request was not withdrawn after the refusal"
    # Only the train stage's own records: Ray's libraries log into the same capture from their threads.
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("codemill.train")]
    assert lines[0].startswith("train: 0 of 3 GPUs are up") and "asked the autoscaler for 3 workers" in lines[0]
    assert any("waiting for the autoscaler (1" in line for line in lines), lines
