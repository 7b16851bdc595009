"""An empty input gives an empty, complete output (dedup and tokenize on the shared Ray head)."""

from __future__ import annotations

import pytest

from codemill import manifest as mf
from codemill import storage
from codemill.runner import run_stage

# -- on Ray -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["dedup", "tokenize"])
def test_empty_input_gives_an_empty_complete_output(tmp_path, ray_session, stage):
    from codemill.filter.schema import KEPT_SCHEMA
    from codemill.stages import STAGES

    upstream = str(tmp_path / "up")
    storage.write_table(KEPT_SCHEMA.empty_table(), storage.join(upstream, "kept", "part-empty.parquet"))
    mf.write_manifest(upstream, mf.Manifest(stage="filter" if stage == "dedup" else "dedup",
                                            status=mf.STATUS_COMPLETE, config_hash="x", config={}))
    spec = STAGES[stage]
    config = spec.load_config_model()()
    manifest = run_stage(stage, config, str(tmp_path / "out"), spec.load_body(), {"input": upstream})
    assert manifest.status == "complete"
    if stage == "dedup":
        assert manifest.counts["docs_in"] == 0 and manifest.counts["docs_kept"] == 0
        kept = storage.read_table(str(tmp_path / "out" / "kept"), schema=KEPT_SCHEMA)
        assert kept.num_rows == 0
    else:
        assert manifest.counts["documents_in"] == 0 and manifest.counts["shards"] == 0
