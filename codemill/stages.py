"""The registry: the single statement of every stage.

A stage is named here with the module `python -m` runs, its body and config model, the inputs it reads
(named: `--<name>` on the command line, `inputs: {<name>: <stage>}` in a DAG), the flags of its own command
line (each either a config key or a value its body reads from `run.flags`), the outputs it writes (the
folder and file names its readers import from here), whether it is a long-running service, and the
resources its Ray job driver asks for. `codemill <stage>`, its `--help`, `python -m codemill.<stage>`,
`codemill dag show` and the DAG checks are all derived from these entries.

Imports are by name and lazy, so listing stages or validating one config never imports the others'
heavy dependencies (torch, deepspeed).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Files every stage writes beside its outputs.
MANIFEST_FILE = "_manifest.json"
STATS_FILE = "stats.json"

# Output names, imported by the stages that read them.
CRAWL_FILES = "files"          # Parquet, codemill.crawl.schema.FILES_SCHEMA
CRAWL_REPOS = "repos"          # one Parquet per finished repository: the completion markers
CRAWL_SKIPPED = "skipped"      # what was not kept, with the reason
FILTER_KEPT = "kept"           # Parquet, codemill.filter.schema.KEPT_SCHEMA
FILTER_REJECTED = "rejected"
FILTER_FIGURE = "language_mix.png"
DEDUP_KEPT = "kept"            # Parquet, the filter's KEPT_SCHEMA
DEDUP_DUPLICATES = "duplicates"
TOKENIZE_SHARDS = "shards"     # Arrow IPC shards (codemill.tokenize.shards)
TOKENIZE_DATASET = "manifest.json"
TOKENIZE_TOKENIZER = "tokenizer.json"
TOKENIZE_REJECTED = "rejected"
TOKENIZE_FIGURE = "tokens_per_language.png"
TRAIN_EXPORT = "export"        # model.safetensors + config.json + tokenizer.json (codemill.train.export)
TRAIN_CHECKPOINTS = "ray_train"
TRAIN_TENSORBOARD = "tensorboard"
TRAIN_METRICS = "metrics.jsonl"
TRAIN_FIGURE = "loss_curve.png"
TRAIN_FAULT_MARKER = "_fault_injected"  # written once by `fault_injection_step` (restart tests)
EVAL_SAMPLES = "samples.jsonl"          # generated samples (the format `codemill eval --samples` reads)
EVAL_RESULTS = "results.jsonl"          # one line per executed sample: outcome, seconds, stderr tail
EVAL_PARTIAL = "partial"                # results written as batches finish (a rerun resumes from them)
EVAL_CHECK_RESULTS = "check_results.jsonl"  # the benchmark check run before scoring (run_if_missing)
EVAL_SUMMARY = "summary.json"
EVAL_CHECK = "check.json"               # --check-benchmark's result
EVAL_REPORT = "report.html"
EVAL_CHARTS = "charts"


@dataclass(frozen=True)
class InputSpec:
    """One named input of a stage."""

    name: str                 # `--<name>` and the key of a DAG stage's `inputs:`
    help: str
    stages: tuple[str, ...]   # the stages whose output it reads (checked in DAGs)
    folder: str = ""          # the part of that output it reads, when a DAG wires it (train's export/)
    required: bool = True
    cli_flag: str = ""        # the command line's flag when it is not `--<name>` (train's data: --input)
    group: str = ""           # flags and inputs of one group exclude each other (StageSpec.required_group)
    needs_manifest: bool = True  # False: a path without a stage manifest is accepted, identified by its URI

    @property
    def flag(self) -> str:
        return self.cli_flag or f"--{self.name.replace('_', '-')}"


@dataclass(frozen=True)
class FlagSpec:
    """One flag of a stage's own command line: a shorthand for a config key (`config_key`), or a value the
    body reads from `run.flags[name]`. A run flag is part of what the output depends on (its manifest's
    hash) as `identity` says: its value, the sha256 of the content at the URI it names, or not at all."""

    name: str                 # `--<name>` (underscores as dashes); the key of run.flags
    help: str
    switch: bool = False      # a flag without a value (True when given)
    config_key: str = ""      # set this config key instead of run.flags
    choices: tuple[str, ...] = ()
    metavar: str = ""
    group: str = ""           # flags and inputs of one group exclude each other
    identity: str = "value"   # value | content | none (run flags only)

    @property
    def flag(self) -> str:
        return f"--{self.name.replace('_', '-')}"


@dataclass(frozen=True)
class Resources:
    """What a stage's Ray job driver asks for; the work itself runs in tasks and workers it starts."""

    entrypoint_num_cpus: float = 0.0
    entrypoint_num_gpus: float = 0.0


@dataclass(frozen=True)
class StageSpec:
    name: str
    module: str               # `python -m <module>` (and `ray job submit -- python -m <module>`)
    summary: str
    config_model: str         # "module:Class"
    body: str                 # "module:function": body(run: StageRun) -> counts
    inputs: tuple[InputSpec, ...] = ()
    outputs: tuple[str, ...] = ()
    long_running: bool = False  # a service (serve): started, not awaited to a terminal status
    resources: Resources = Resources()
    main: str | None = None   # "module:function" for a stage with its own command line (serve)
    flags: tuple[FlagSpec, ...] = ()
    required_group: str = ""  # one input or flag of this group must be given

    def input(self, name: str) -> InputSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(f"stage {self.name} has no input {name!r}; its inputs: {[i.name for i in self.inputs]}")

    def load_body(self) -> Callable[[Any], dict]:
        return _load(self.body)

    def load_config_model(self):
        return _load(self.config_model)

    def load_main(self) -> Callable[[list[str] | None], int]:
        if self.main:
            return _load(self.main)
        from codemill.runner import stage_main

        return lambda argv=None: stage_main(self.name, argv)


def _load(ref: str):
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def _input(stage: str, what: str) -> InputSpec:
    return InputSpec("input", f"the {stage} stage's output URI ({what})", (stage,))


STAGES: dict[str, StageSpec] = {s.name: s for s in (
    StageSpec("crawl", "codemill.crawl",
              "fetch repositories (GitHub API, git URLs, local folders/archives) into files/",
              "codemill.crawl.config:CrawlConfig", "codemill.crawl.stage:body",
              outputs=(CRAWL_FILES, CRAWL_REPOS, CRAWL_SKIPPED, STATS_FILE)),
    StageSpec("filter", "codemill.filter",
              "drop files by line length, alphabet ratio, size, auto-generation; identify languages",
              "codemill.filter.config:FilterConfig", "codemill.filter.stage:body",
              inputs=(_input("crawl", "its files/"),),
              outputs=(FILTER_KEPT, FILTER_REJECTED, STATS_FILE, FILTER_FIGURE)),
    StageSpec("dedup", "codemill.dedup", "remove exact and MinHash near duplicates, and benchmark contamination",
              "codemill.dedup.config:DedupConfig", "codemill.dedup.stage:body",
              inputs=(_input("filter", "its kept/"),),
              outputs=(DEDUP_KEPT, DEDUP_DUPLICATES, STATS_FILE)),
    StageSpec("tokenize", "codemill.tokenize", "CodeGeeX tokenizer, language tags, packed Arrow shards",
              "codemill.tokenize.config:TokenizeConfig", "codemill.tokenize.stage:body",
              inputs=(_input("dedup", "its kept/"),),
              outputs=(TOKENIZE_SHARDS, TOKENIZE_DATASET, TOKENIZE_TOKENIZER, TOKENIZE_REJECTED, STATS_FILE,
                       TOKENIZE_FIGURE)),
    StageSpec("train", "codemill.train", "pretrain the CodeGeeX model with Ray Train + DeepSpeed",
              "codemill.train.config:TrainConfig", "codemill.train.stage:body",
              inputs=(InputSpec("data", "the tokenize stage's output URI (its shards/)", ("tokenize",),
                                cli_flag="--input"),
                      InputSpec("init", "a train stage's export/ to start from (CodeGen's Multi -> Mono; or the "
                                "config's init_from)", ("train",), folder=TRAIN_EXPORT, required=False)),
              outputs=(TRAIN_EXPORT, TRAIN_CHECKPOINTS, TRAIN_TENSORBOARD, TRAIN_METRICS, TRAIN_FIGURE, STATS_FILE,
                       TRAIN_FAULT_MARKER)),
    StageSpec("eval", "codemill.eval",
              "HumanEval-X or MTPB: generated or given samples executed in a sandbox and scored (pass@k, pass rate)",
              "codemill.eval.config:EvalConfig", "codemill.eval.stage:body",
              inputs=(InputSpec("model", "an export to generate with: a train stage's export/ (or its output)",
                                ("train",), folder=TRAIN_EXPORT, required=False, group="source",
                                needs_manifest=False),),
              flags=(FlagSpec("endpoint", "an OpenAI-compatible server (…/v1/completions) to generate with",
                              metavar="URL", group="source"),
                     FlagSpec("samples", "execute and score these samples (JSON Lines)", metavar="FILE.jsonl",
                              group="source", identity="content"),
                     FlagSpec("check_benchmark", "run every canonical solution and its mutants per task; store the "
                              "result for this machine", switch=True, group="source"),
                     FlagSpec("benchmark", "the benchmark (config key `benchmark`; default humaneval-x)",
                              config_key="benchmark", choices=("humaneval-x", "mtpb")),
                     FlagSpec("mtpb_mode", "MTPB: turn by turn, all prompts at once, or both side by side (config "
                              "key `mtpb_mode`)", config_key="mtpb_mode",
                              choices=("multi-turn", "single-turn", "both")),
                     FlagSpec("api_key_env", "environment variable holding the endpoint's API key", metavar="NAME",
                              identity="none"),
                     FlagSpec("unsafe_no_sandbox", "execute WITHOUT bubblewrap (namespaces off; only cgroups, rlimits "
                              "and a private uid): never on a machine you care about", switch=True),
                     FlagSpec("ignore_benchmark_check", "score even though the benchmark check has not passed on this "
                              "machine (recorded loudly)", switch=True)),
              required_group="source",
              outputs=(EVAL_SAMPLES, EVAL_RESULTS, EVAL_CHECK_RESULTS, EVAL_SUMMARY, EVAL_CHECK, EVAL_REPORT,
                       EVAL_CHARTS, EVAL_PARTIAL)),
    StageSpec("serve", "codemill.serve", "serve exports over an OpenAI-compatible HTTP API with Ray Serve",
              "codemill.serve.config:ServeConfig", "",
              inputs=(InputSpec("input", "an export: a train stage's export/ (or its output folder); fills "
                                "models[0].input", ("train",), folder=TRAIN_EXPORT, required=False,
                                needs_manifest=False),),
              flags=(FlagSpec("host", "HTTP host (config key `host`; default 127.0.0.1)", config_key="host"),
                     FlagSpec("port", "HTTP port (config key `port`; default 8000)", config_key="port"),
                     FlagSpec("address", "Ray address (default: RAY_ADDRESS, else a local Ray started here)",
                              metavar="ADDRESS", identity="none"),
                     FlagSpec("smoke", "deploy, ask every model one completion, shut down; exit 0 when all "
                              "answered (config key `smoke_check`)", switch=True, config_key="smoke_check")),
              outputs=(MANIFEST_FILE,), long_running=True, main="codemill.serve.cli:main"),
)}


def get(name: str) -> StageSpec:
    try:
        return STAGES[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; known stages: {', '.join(STAGES)}") from None
