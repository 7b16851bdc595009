"""What the DAG runner prints of a job's log: every line, less the ones that repeat without telling a user
anything, and Ray Data's progress blocks condensed to one line per operator per interval.

Ray Data logs its progress every few seconds when stdout is not a terminal (a job's log), as a block:

    ... logging_progress.py:174 -- ======= Running Dataset: dataset_035A_0 =======
    ... logging_progress.py:225 -- Total Progress: 120/?
    ... logging_progress.py:231 -- ReadParquet: 3/8
    ... logging_progress.py:233 --   Tasks: 2; Actors: 0; Queued blocks: 1 (2.0MiB); Resources: 2.0 CPU, ...
    ... logging_progress.py:192 -- ==========================================

which becomes `Ray Data dataset_035A_0: ReadParquet 3/8 (2 tasks, 1 queued block)`, one line per operator.
The job's full log keeps everything. Ray-free: fed the text chunks of `tail_job_logs`, which may cut a line.
"""

from __future__ import annotations

import re

# Lines of Ray's and DeepSpeed's that repeat without telling a user anything (the stages' own progress and
# summaries are logged by codemill).
_NOISE = re.compile("|".join([
    # Ray Train: its controller's housekeeping, and one line per report and checkpoint (codemill logs steps)
    r"PlacementGroupCleaner", r"Failed to query Ray Train Controller", r"PreemptionWatcher",
    r"Reporting training result", r"Checkpoint successfully created", r"Requesting resources:",
    r"Attempting to start training worker group", r"Started training worker group", r"world_rank=\d+, local_rank",
    r"Setting up process group for", r"socket\.cpp:\d+\] \[c10d\]",
    # DeepSpeed and torch, once per worker
    r"Setting accelerator to CPU", r"real_accelerator\.py", r"deepspeed_shm_comm_op built successfully",
    r"all_gather_into_tensor` is deprecated", r"return func\(\*args, \*\*kwargs\)",
    # Ray Data: its execution plan and settings (its progress blocks are condensed, not dropped)
    r"streaming_executor\.py:\d+ -- (?!✔)", r"hash_shuffle\.py:\d+ -- Estimated memory",
    r"Progress will be logged because", r"Data sink Parquet finished",
    r"use_push_based_shuffle", r"use_polars", r"use_arrow_tensor_v2",
    # a job driver connecting to the cluster
    r"network_util\.cc:\d+: Failed to determine local IP", r"worker\.py:\d+ -- Connecting to existing Ray cluster",
    r"worker\.py:\d+ -- Connected to Ray cluster", r"job_manager\.py:\d+ -- Runtime env is setting up",
    r"PYTHON worker processes have been started on node",
    r"DeprecationWarning", r"warnings\.warn\(",
    r"^\s*$",
]))

_PROGRESS = re.compile(r"logging_progress\.py:\d+ -- (?P<text>.*)$")
_BLOCK_START = re.compile(r"^=+ Running Dataset: (?P<dataset>\S+) =+$")
_BLOCK_END = re.compile(r"^=+$")
_OPERATOR = re.compile(r"^(?P<name>\S.*): (?P<done>\d+)/(?P<total>\d+|\?)$")
_DETAILS = re.compile(r"^\s+Tasks: (?P<tasks>\d+)(?P<pressure> \[[^\]]*\])?;.*?Queued blocks: (?P<queued>\d+)")


def is_noise(line: str) -> bool:
    return bool(_NOISE.search(line))


class JobLogFilter:
    """Fed the chunks of a job's log, returns the lines to print (without their newlines)."""

    def __init__(self):
        self._partial = ""
        self._dataset: str | None = None  # inside a progress block: its dataset
        self._operators: list[dict] = []

    def feed(self, chunk: str) -> list[str]:
        text = self._partial + chunk
        lines = text.split("\n")
        self._partial = lines.pop()  # an unfinished last line waits for the next chunk
        return [out for line in lines for out in self._line(line.rstrip("\r"))]

    def flush(self) -> list[str]:
        """The rest, once the log has ended (an unfinished last line, a cut-short progress block)."""
        rest, self._partial = self._partial, ""
        printed = self._line(rest) if rest else []
        return printed + self._emit()

    def _line(self, line: str) -> list[str]:
        progress = _PROGRESS.search(line)
        if progress is None:
            return [] if is_noise(line) else [line]
        text = progress.group("text")
        if start := _BLOCK_START.match(text):
            done = self._emit()  # a block that never ended
            self._dataset = start.group("dataset")
            return done
        if self._dataset is None:
            return []
        if _BLOCK_END.match(text):
            return self._emit()
        if text.startswith("Total Progress:"):
            return []
        if operator := _OPERATOR.match(text):
            self._operators.append({**operator.groupdict(), "tasks": None})
        elif (details := _DETAILS.match(text)) and self._operators:
            self._operators[-1].update(tasks=int(details.group("tasks")), queued=int(details.group("queued")),
                                       backpressured=bool(details.group("pressure")))
        return []

    def _emit(self) -> list[str]:
        lines = []
        for op in self._operators:
            detail = ""
            if op["tasks"] is not None:
                parts = [f"{op['tasks']} task{'s' * (op['tasks'] != 1)}"]
                if op["queued"]:
                    parts.append(f"{op['queued']} queued block{'s' * (op['queued'] != 1)}")
                if op["backpressured"]:
                    parts.append("backpressured")
                detail = f" ({', '.join(parts)})"
            lines.append(f"Ray Data {self._dataset}: {op['name']} {op['done']}/{op['total']}{detail}")
        self._dataset, self._operators = None, []
        return lines
