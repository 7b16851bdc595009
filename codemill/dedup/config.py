"""The dedup stage's configuration. Defaults follow the issue's recipe: 5-gram shingles of code tokens,
256 MinHash permutations (datasketch's seed 1), Jaccard threshold 0.7 with datasketch's band/row choice,
and 13-gram decontamination against HumanEval-X."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from codemill.config import StrictModel

SHINGLE_SIZE = 5  # code tokens per shingle
NUM_PERM = 256  # MinHash permutations
MINHASH_SEED = 1  # datasketch.MinHash's default seed
JACCARD_THRESHOLD = 0.7
# datasketch.MinHashLSH weighs false positives and false negatives equally when it chooses bands x rows.
FALSE_POSITIVE_WEIGHT = 0.5
FALSE_NEGATIVE_WEIGHT = 0.5
# 13-grams are the usual contamination test (GPT-3, The Stack / StarCoder): long enough that shared
# idioms do not match, short enough that a copied solution does.
DECONTAMINATION_NGRAM = 13
BOILERPLATE_MIN_PROBLEMS = 3
DOCS_PER_BATCH = 1024  # documents per signature batch: ~10 MB of code, big enough to amortise the kernel call
BAND_ROWS_PER_PARTITION = 2_000_000  # shuffle partition size (~48 MB of keys), so reducer memory stays flat
# Duplicate-graph partition sizes, so a task's memory stays flat however many duplicates the corpus has:
# edge pairs (16 bytes) per components partition, and cluster members (~1.2 KB each with their signature)
# per resolve partition: a resolve task then holds ~60 MB of members, less than a sketch task's batch.
EDGE_ROWS_PER_PARTITION = 2_000_000
MEMBER_ROWS_PER_PARTITION = 50_000


class NearDedupConfig(StrictModel):
    enabled: bool = True
    shingle_size: int = Field(SHINGLE_SIZE, ge=1, le=64)
    num_perm: int = Field(NUM_PERM, ge=2, le=4096)
    seed: int = Field(MINHASH_SEED, ge=0, lt=2**32)
    threshold: float = Field(JACCARD_THRESHOLD, gt=0.0, lt=1.0)
    # Leave both unset to choose them as datasketch.MinHashLSH does for `threshold`; set both to override.
    bands: int | None = Field(None, ge=1)
    rows: int | None = Field(None, ge=1)
    false_positive_weight: float = Field(FALSE_POSITIVE_WEIGHT, ge=0.0)
    false_negative_weight: float = Field(FALSE_NEGATIVE_WEIGHT, ge=0.0)
    # "estimated": drop a candidate pair whose signatures agree on fewer than `threshold` of the
    # permutations (cuts LSH false positives); "none": every candidate pair is an edge.
    verify: Literal["estimated", "none"] = "estimated"

    @model_validator(mode="after")
    def _bands_and_rows(self) -> NearDedupConfig:
        if (self.bands is None) != (self.rows is None):
            raise ValueError("set both near.bands and near.rows, or neither (then they follow near.threshold)")
        if self.bands is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"near.bands x near.rows = {self.bands * self.rows} exceeds "
                             f"near.num_perm = {self.num_perm}")
        return self


class DecontaminationConfig(StrictModel):
    # gzipped or plain JSON Lines files of HumanEval-X (`fields` of each record) or MTPB (its description
    # and turn prompts); none = no decontamination. The DAGs pass the shipped data/humaneval-x and data/mtpb.
    paths: list[str] = Field(default_factory=list)
    ngram: int = Field(DECONTAMINATION_NGRAM, ge=1, le=256)
    min_matches: int = Field(1, ge=1)  # shared n-grams that make a document contaminated
    # An n-gram found in this many distinct benchmark problems or more is boilerplate (a C++ include
    # block, Java imports), not a solution; it is not used for matching.
    boilerplate_min_problems: int = Field(BOILERPLATE_MIN_PROBLEMS, ge=2)
    fields: list[str] = Field(default_factory=lambda: ["prompt", "canonical_solution"])


class DedupConfig(StrictModel):
    near: NearDedupConfig = Field(default_factory=NearDedupConfig)
    decontaminate: DecontaminationConfig = Field(default_factory=DecontaminationConfig)
    docs_per_batch: int = Field(DOCS_PER_BATCH, ge=1)
    band_rows_per_partition: int = Field(BAND_ROWS_PER_PARTITION, ge=1000)
    edge_rows_per_partition: int = Field(EDGE_ROWS_PER_PARTITION, ge=1)
    member_rows_per_partition: int = Field(MEMBER_ROWS_PER_PARTITION, ge=1)
