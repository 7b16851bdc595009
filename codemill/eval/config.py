"""The eval stage's configuration (`codemill eval --config eval.yaml --set key=value`). Defaults are the
CodeGeeX paper's settings (SPEC §8) where it has one."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from codemill.config import StrictModel
from codemill.eval.mutants import DEFAULT_MUTANTS
from codemill.eval.passk import PAPER_K, PAPER_WEIGHTS, STRATEGIES

Language = Literal["Python", "C++", "Java", "JavaScript", "Go"]
ALL_LANGUAGES: list[str] = ["Python", "C++", "Java", "JavaScript", "Go"]

# SPEC §8: n = 200 samples per problem; t = 0.2 / top-p 0.95 for pass@1, t = 0.8 / top-p 0.95 for pass@10/100.
PAPER_N = 200
PAPER_TOP_P = 0.95
PAPER_TEMPERATURE_PASS1 = 0.2
PAPER_TEMPERATURE_PASS100 = 0.8
PAPER_BUDGET_K = 100
# SPEC §10: MTPB's reference samples 40 programs per test case at t = 0.2, top-p 0.95; a program gets 20 s.
MTPB_N = 40
MTPB_TEMPERATURE = 0.2
MTPB_TIME_S = 20.0
HUMANEVAL_X_PROBLEMS = 164
MTPB_PROBLEMS = 115
HUMANEVAL_X_MAX_TOKENS = 1024  # generous for one function body; stop strings end most generations far earlier


class GenerationConfig(StrictModel):
    n: int = Field(PAPER_N, ge=1, le=100_000, description="samples per prompt")
    temperature: float = Field(PAPER_TEMPERATURE_PASS100, ge=0.0, le=2.0,
                               description="0.8 for pass@10/100 (paper); 0.2 for pass@1; 0 = greedy")
    top_p: float = Field(PAPER_TOP_P, gt=0.0, le=1.0)
    max_tokens: int | None = Field(
        None, ge=1, le=8192, description=f"length limit of a generation, in tokens: HumanEval-X's default is "
        f"{HUMANEVAL_X_MAX_TOKENS}; MTPB's is each problem's max_gen_length (a turn's; the sum of its turns' in "
        "single-turn mode), which a value here caps")
    seed: int = Field(0, ge=0)
    batch_size: int = Field(8, ge=1, le=4096, description="prompts per request to an endpoint")
    n_per_request: int = Field(20, ge=1, le=10_000, description="samples asked for in one request (split above)")
    max_batch_size: int = Field(64, ge=1, le=4096, description="KV-cache slots of an in-process engine")
    concurrency: int = Field(4, ge=1, le=256, description="requests in flight to an endpoint")
    request_timeout_s: float = Field(600.0, gt=0, le=86_400)
    max_retries: int = Field(3, ge=0, le=20)
    model_name: str = Field("codemill", min_length=1, description="the `model` field sent to an endpoint")
    # In-process generation with codemill's serve engine (--model): one Ray actor per GPU, or CPU actors.
    actors: int = Field(0, ge=0, le=1024, description="engine actors; 0 = one per GPU, or one on CPU without GPUs")
    gpus_per_actor: float = Field(1.0, ge=0.0, le=8.0)
    cpus_per_actor: float = Field(1.0, gt=0.0, le=256.0)
    device: Literal["auto", "cuda", "cpu"] = "auto"


class ExecutionConfig(StrictModel):
    # Time limits, calibrated on the machine: a task's limit is `time_multiple` x its canonical solution's
    # measured run time (from the benchmark check on this machine), never below `time_floor_s`;
    # `default_time_s` applies when the machine has no calibration.
    time_multiple: float = Field(10.0, ge=1.0, le=1000.0)
    time_floor_s: float = Field(3.0, gt=0.0, le=600.0)
    default_time_s: float = Field(10.0, gt=0.0, le=600.0)
    compile_time_s: float = Field(60.0, gt=0.0, le=1800.0)
    retry_timeouts: bool = Field(True, description="run a timed-out sample once more before counting it")
    memory_mb: int = Field(2048, ge=64, le=262_144,
                           description="memory of a whole test run: every process, its page cache and its /tmp and "
                                       "/dev/shm (a cgroup); also each process's data segment")
    compile_memory_mb: int = Field(4096, ge=256, le=262_144, description="the same for a compile step")
    processes: int = Field(256, ge=8, le=65_536, description="processes and threads of one execution")
    output_mb: int = Field(64, ge=1, le=4096, description="largest file or output one execution may write")
    tmp_mb: int = Field(64, ge=1, le=65_536, description="size of a test run's private /tmp")
    shm_mb: int = Field(64, ge=1, le=65_536, description="size of a test run's private /dev/shm")
    cgroups: Literal["auto", "require", "off"] = Field(
        "auto", description="bound each execution as a whole with a cgroup: where the host allows it (auto), "
                            "or refuse to run without (require), or rely on per-process rlimits only (off)")
    cpus_per_task: float = Field(1.0, gt=0.0, le=64.0, description="Ray CPUs reserved by one execution task")
    node_labels: dict[str, str] = Field(default_factory=dict,
                                        description="run executions only on Ray nodes with these labels (e.g. "
                                                    "{codemill.io/sandbox: 'true'} on infra/kuberay's cpu group)")
    batch_size: int = Field(4, ge=1, le=1000, description="samples per Ray task")
    postprocess: bool = Field(True, description="apply the stop rules to given completions too (idempotent)")
    cpp_std: str = Field("c++11", pattern=r"^(c|gnu)\+\+(98|03|11|14|17|20|23)$",
                         description="CodeGeeX's harness compiles with -std=c++11")
    mtpb_time_s: float = Field(MTPB_TIME_S, gt=0.0, le=600.0, description="wall-clock limit of an MTPB program")


class CheckConfig(StrictModel):
    mutants_per_task: int = Field(DEFAULT_MUTANTS, ge=0, le=50,
                                  description="wrong answers the benchmark check tries per task besides the "
                                              "constant return: mutants of the canonical solution")


class MtpbConfig(StrictModel):
    scoring: Literal["strict", "codegen"] = Field(
        "strict", description="strict: codemill's rule (the program must finish; dicts and None compared); "
                              "codegen: CodeGen's mtpb_exec.py exactly (docs/eval.md lists the differences)")


class MetricsConfig(StrictModel):
    k: list[Annotated[int, Field(ge=1, le=100_000)]] = Field(default_factory=lambda: list(PAPER_K))
    bootstrap_resamples: int = Field(1000, ge=10, le=1_000_000)
    bootstrap_seed: int = Field(0, ge=0)
    budget_k: list[Annotated[int, Field(ge=1, le=100_000)]] = Field(default_factory=lambda: [PAPER_BUDGET_K],
        description="budgets of pass@k_pi")
    strategies: list[Literal["best_single", "uniform", "weighted"]] = Field(default_factory=lambda: list(STRATEGIES))
    weights: dict[str, Annotated[float, Field(ge=0.0, le=1e6)]] = Field(default_factory=lambda: dict(PAPER_WEIGHTS),
                                      description="Weighted strategy: share of the budget per language")
    translation_k: int = Field(1, ge=1, description="the k of the translation matrix")

    @field_validator("k", "budget_k")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if not v or any(k < 1 for k in v):
            raise ValueError("must be a non-empty list of integers >= 1")
        return sorted(set(v))

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [lang for lang in v if lang not in ALL_LANGUAGES]
        if bad:
            raise ValueError(f"unknown languages {bad}; known: {ALL_LANGUAGES}")
        if any(w < 0 for w in v.values()) or sum(v.values()) <= 0:
            raise ValueError("weights must be >= 0 with a positive sum")
        return v


class EvalConfig(StrictModel):
    benchmark: Literal["humaneval-x", "mtpb"] = Field(
        "humaneval-x", description="HumanEval-X (SPEC §8) or CodeGen's multi-turn MTPB (SPEC §10; Python)")
    mtpb_mode: Literal["multi-turn", "single-turn", "both"] = Field(
        "multi-turn", description="MTPB: turn by turn, all prompts at once, or both side by side")
    languages: list[Language] = Field(default_factory=lambda: list(ALL_LANGUAGES))
    problems: list[Annotated[int, Field(ge=0, le=max(HUMANEVAL_X_PROBLEMS - 1, MTPB_PROBLEMS))]] = Field(
        default_factory=list, description="HumanEval-X problem numbers 0-163 or MTPB ids 1-115; empty = all")
    tasks: list[Annotated[str, Field(pattern=r"^(Python|CPP|Java|JavaScript|Go|MTPB)/\d+(/\d+)?$")]] = Field(
        default_factory=list, description="these units only, instead of languages x problems: HumanEval-X task ids "
                                          "(CPP/12) or MTPB test cases (MTPB/3/2); e.g. a check of chosen tasks")
    mode: Literal["generation", "translation", "both"] = "generation"
    translation_pairs: list[str] = Field(default_factory=list,
                                         description="'Src->Tgt' pairs; empty = all ordered pairs of `languages`")
    data_dir: str | None = Field(None, description="the benchmark's data folder; default: the data shipped in "
                                                "data/humaneval-x or data/mtpb")
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    check: CheckConfig = Field(default_factory=CheckConfig)
    mtpb: MtpbConfig = Field(default_factory=MtpbConfig)
    charts: bool = True
    benchmark_check: Literal["require", "run_if_missing"] = Field(
        "require", description="require: refuse to score unless `--check-benchmark` passed on this machine's "
        "fingerprint for the scored tasks; run_if_missing: run that check for the missing tasks first")

    @field_validator("languages")
    @classmethod
    def _languages(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one language")
        return [lang for lang in ALL_LANGUAGES if lang in v]

    @model_validator(mode="before")
    @classmethod
    def _mtpb_generation_defaults(cls, data):
        """MTPB's reference sampling (n, temperature) where the config leaves them unset."""
        if isinstance(data, dict) and data.get("benchmark") == "mtpb" and isinstance(data.get("generation"),
                                                                                  dict | None):
            data = {**data, "generation": {"n": MTPB_N, "temperature": MTPB_TEMPERATURE,
                                           **(data.get("generation") or {})}}
        return data

    @field_validator("problems")
    @classmethod
    def _problems(cls, v: list[int]) -> list[int]:
        return sorted(set(v))

    @model_validator(mode="after")
    def _problem_range(self) -> EvalConfig:
        low, high = (1, MTPB_PROBLEMS) if self.benchmark == "mtpb" else (0, HUMANEVAL_X_PROBLEMS - 1)
        bad = [p for p in self.problems if not low <= p <= high]
        if bad:
            raise ValueError(f"problems {bad}: {self.benchmark} problem numbers are {low}-{high}")
        return self

    @model_validator(mode="after")
    def _pairs(self) -> EvalConfig:
        for pair in self.translation_pairs:
            src, _, tgt = pair.partition("->")
            if src not in self.languages or tgt not in self.languages or src == tgt:
                raise ValueError(f"translation pair {pair!r}: expected 'Src->Tgt' with two different languages "
                                 f"of {self.languages}")
        return self

    def pairs(self) -> list[tuple[str, str]]:
        if self.translation_pairs:
            return [tuple(p.split("->")) for p in self.translation_pairs]  # type: ignore[misc]
        return [(s, t) for s in self.languages for t in self.languages if s != t]
