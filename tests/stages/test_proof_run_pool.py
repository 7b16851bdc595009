"""benchmarks/proof_run.py's GeneratorPool (one engine per GPU, a process each) writes the samples one engine would."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

from proof_run import GeneratorPool  # noqa: E402

from codemill.eval.generate import EngineGenerator  # noqa: E402
from codemill.serve.testing import write_random_export  # noqa: E402
from codemill.train.model_config import PRESETS  # noqa: E402


def test_pool_of_two_engines_matches_one_engine(tmp_path):
    export = str(tmp_path / "export")
    write_random_export(export, PRESETS["tiny"], init_std=0.06)
    prompts = [f"def f{i}(x):\n    " for i in range(5)]
    args = (prompts, [2, 1, 3, 1, 2], 0.8, 0.95, [6, 4, 6, 5, 6], [["\n\n"]] * 5)
    seeds = [7919 * i for i in range(5)]
    one = EngineGenerator(export, device="cpu", max_batch_size=16).generate(*args, seeds=seeds)
    pool = GeneratorPool(export, "cpu", 2, 16, "auto", False)
    try:
        assert pool.generate(*args, seeds=seeds) == one
    finally:
        pool.close()
    assert [len(x) for x in one] == [2, 1, 3, 1, 2]
