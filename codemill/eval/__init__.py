"""Evaluation: HumanEval-X and CodeGen's MTPB behind one interface (benchmark.py), over one core: the sandbox
(sandbox.py, cgroups.py), execution and the proof of a pass (execute.py, proof.py, harness/), pass@k
(passk.py), reports, Ray fan-out with resume (fanout.py, partial.py) and the benchmark-check gate
(benchmark_check.py, mutants.py). The stage's body is stage.py; docs/eval.md describes it all."""
