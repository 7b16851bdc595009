"""The registry of stages: the module that runs each (`python -m ...`) and its config model.

Imports are by name and lazy, so listing stages or validating one config never imports the others'
heavy dependencies (torch, deepspeed).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class StageSpec:
    name: str
    module: str         # what `python -m <module>` runs (and `ray job submit -- python -m <module>`)
    main: str           # "module:function", main(argv) -> exit code
    config_model: str   # "module:Class"
    takes_input: bool
    summary: str

    def load_main(self) -> Callable[[list[str] | None], int]:
        return _load(self.main)

    def load_config_model(self):
        return _load(self.config_model)


def _load(ref: str):
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


STAGES: dict[str, StageSpec] = {s.name: s for s in (
    StageSpec("crawl", "codemill.pipeline.crawl", "codemill.pipeline.crawl:main",
              "codemill.pipeline.crawl_config:CrawlConfig", False,
              "fetch repositories (GitHub API, git URLs, local folders/archives) into files/"),
    StageSpec("filter", "codemill.pipeline.filter", "codemill.pipeline.filter:main",
              "codemill.pipeline.filter_config:FilterConfig", True,
              "drop files by line length, alphabet ratio, size, auto-generation; identify languages"),
    StageSpec("dedup", "codemill.dedup", "codemill.dedup.stage:main", "codemill.dedup.config:DedupConfig", True,
              "remove exact and MinHash near duplicates, and benchmark contamination"),
    StageSpec("tokenize", "codemill.tokenize", "codemill.tokenize.stage:main",
              "codemill.tokenize.config:TokenizeConfig", True,
              "CodeGeeX tokenizer, language tags, packed Arrow shards"),
    StageSpec("train", "codemill.train", "codemill.train.stage:main", "codemill.train.config:TrainConfig", True,
              "pretrain the CodeGeeX model with Ray Train + DeepSpeed"),
)}
