"""Storage and the stage runner against a real S3 server (moto_server on loopback)."""

from __future__ import annotations

from storage_checks import roundtrip, runner_skips_complete_and_reruns_on_change


def test_storage_s3(s3_bucket):
    roundtrip(s3_bucket + "/prefix")


def test_runner_skips_complete_and_reruns_on_change_on_s3(s3_bucket):
    runner_skips_complete_and_reruns_on_change(s3_bucket)
