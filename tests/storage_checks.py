"""Checks of storage and the stage runner that hold on any storage: the unit tier runs them on a local folder,
the stages tier on the real S3 server."""

from __future__ import annotations

import pyarrow as pa

from codemill import manifest as mf
from codemill import storage
from codemill.config import StrictModel, build_config
from codemill.runner import run_stage


class Inner(StrictModel):
    threshold: float = 0.4
    names: list[str] = ["a"]


class Demo(StrictModel):
    inner: Inner = Inner()
    size: int = 3


def roundtrip(root: str) -> None:
    """JSON and Parquet written, listed, read back and deleted under `root`."""
    uri = storage.join(root, "a", "b.json")
    storage.write_json(uri, {"x": 1})
    assert storage.exists(uri) and storage.read_json(uri) == {"x": 1}
    table = pa.table({"k": [1, 2, 3]})
    storage.write_table(table, storage.join(root, "t", "part-0.parquet"))
    storage.write_table(table, storage.join(root, "t", "part-1.parquet"))
    assert storage.read_table(storage.join(root, "t")).num_rows == 6
    assert len(storage.list_files(storage.join(root, "t"), ".parquet")) == 2
    storage.delete_dir(storage.join(root, "t"))
    assert not storage.exists(storage.join(root, "t", "part-0.parquet"))


def _body(calls):
    def body(run):
        calls.append(run.out)
        storage.write_json(run.path("data.json"), {"size": run.config.size})
        return {"rows": run.config.size}
    return body


def runner_skips_complete_and_reruns_on_change(root: str) -> None:
    calls: list[str] = []
    up = storage.join(root, "up")
    down = storage.join(root, "down")
    run_stage("up", Demo(), up, _body(calls))
    run_stage("down", Demo(), down, _body(calls), inputs={"input": up})
    assert len(calls) == 2
    run_stage("down", Demo(), down, _body(calls), inputs={"input": up})
    assert len(calls) == 2, "a complete stage with the same config and input must do nothing"
    run_stage("down", build_config(Demo, {"size": 9}), down, _body(calls), inputs={"input": up})
    assert len(calls) == 3, "a changed config must rerun"
    run_stage("up", build_config(Demo, {"size": 1}), up, _body(calls))
    run_stage("down", build_config(Demo, {"size": 9}), down, _body(calls), inputs={"input": up})
    assert len(calls) == 5, "a changed input must rerun"
    m = mf.read_manifest(down)
    assert m.status == "complete" and m.counts == {"rows": 9} and m.inputs["input"]["stage"] == "up"
