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
    pool = GeneratorPool(export, "cpu", 2, 16, "auto", False, 600.0)
    try:
        assert pool.generate(*args, seeds=seeds) == one
    finally:
        pool.close()
    assert [len(x) for x in one] == [2, 1, 3, 1, 2]


def test_engine_generator_ends_a_stalled_generation_with_an_error(tmp_path):
    """An engine that steps without producing anything (a livelock) ends the call with an error that says what
    the engine held; the engine is emptied, and the next call generates."""
    import pytest

    from codemill.eval.generate import GenerationError

    export = str(tmp_path / "export")
    write_random_export(export, PRESETS["tiny"], init_std=0.06)
    gen = EngineGenerator(export, device="cpu", max_batch_size=4, stall_s=0.5)
    step = gen.engine.step
    gen.engine.step = lambda: None  # steps that never schedule anything
    with pytest.raises(GenerationError, match=r"no output for \d+ s \(bound 0 s\) while work remains: \d+ steps, "
                                              r"0 sequences running, 2 requests waiting"):
        gen.generate(["def f(x):\n", "def g(y):\n"], 1, 0.8, 0.95, 4, [[], []], seeds=[0, 1])
    assert not gen.engine.has_work()
    gen.engine.step, gen.stall_s = step, 600.0  # a first CPU step under load can take longer than 0.5 s
    assert [len(x) for x in gen.generate(["def f(x):\n"], 2, 0.8, 0.95, 4, [[]], seeds=[0])] == [2]
