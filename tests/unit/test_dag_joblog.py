"""What the DAG runner prints of a job's log: noise dropped, Ray Data's progress blocks (as Ray 2.60 logs them in
a job, copied from a filter stage's job log) condensed to one line per operator per interval, lines cut by a
chunk boundary put back together."""

from __future__ import annotations

from codemill.dag.joblog import JobLogFilter

BLOCK = """\
2026-12-06 18:13:13,722\tINFO logging_progress.py:174 -- ======= Running Dataset: dataset_035A7MG3q6L9s0MJqoNZdZ_0 =======
2026-12-06 18:13:13,722\tINFO logging_progress.py:225 -- Total Progress: 0/?
2026-12-06 18:13:13,722\tINFO logging_progress.py:227 -- Active & requested resources: 1/0 CPU, 0.0B/0.0B object store
2026-12-06 18:13:13,722\tINFO logging_progress.py:181 --<space>
2026-12-06 18:13:13,722\tINFO logging_progress.py:231 -- ListFiles: 1/1
2026-12-06 18:13:13,722\tINFO logging_progress.py:233 --   Tasks: 0; Actors: 0; Queued blocks: 0 (0.0B); Resources: 0.0 CPU, 0.0B object store
2026-12-06 18:13:13,722\tINFO logging_progress.py:231 -- ReadFilesParquetV2: 3/8
2026-12-06 18:13:13,722\tINFO logging_progress.py:233 --   Tasks: 2; Actors: 0; Queued blocks: 1 (2.0MiB); Resources: 2.0 CPU, 4.0MiB object store
2026-12-06 18:13:13,722\tINFO logging_progress.py:231 -- MapBatches(filter_and_write): 0/8
2026-12-06 18:13:13,722\tINFO logging_progress.py:233 --   Tasks: 0 [backpressured:tasks(ResourceBudget)]; Actors: 0; Queued blocks: 4 (0.0B); Resources: 0.0 CPU, 0.0B object store
2026-12-06 18:13:13,722\tINFO logging_progress.py:192 -- =================================================================
""".replace("<space>", " ")
CONDENSED = [
    "Ray Data dataset_035A7MG3q6L9s0MJqoNZdZ_0: ListFiles 1/1 (0 tasks)",
    "Ray Data dataset_035A7MG3q6L9s0MJqoNZdZ_0: ReadFilesParquetV2 3/8 (2 tasks, 1 queued block)",
    "Ray Data dataset_035A7MG3q6L9s0MJqoNZdZ_0: MapBatches(filter_and_write) 0/8 (0 tasks, 4 queued blocks, "
    "backpressured)",
]


def test_a_progress_block_becomes_one_line_per_operator():
    shown = JobLogFilter()
    assert shown.feed(BLOCK) == CONDENSED
    assert shown.feed(BLOCK) == CONDENSED  # the next interval: the next three lines
    assert shown.flush() == []


def test_stage_lines_pass_noise_is_dropped_and_the_end_of_a_dataset_is_kept():
    log = ("2026-12-06 18:13:03,450\tINFO __init__.py:56 -- Progress will be logged because stdout is a "
           "non-interactive terminal.\n"
           "2026-12-06 18:13:03,444\tINFO streaming_executor.py:216 -- Execution plan of Dataset d_0: "
           "InputDataBuffer[Input] -> TaskPoolMapOperator[ListFiles]\n"
           + BLOCK +
           "2026-12-06 18:14:00,932\tINFO streaming_executor.py:371 -- ✔️  Dataset d_0 execution finished in "
           "57.49 seconds\n"
           "18:14:05 INFO codemill.filter: filter: 0.0 MB in 63.6 s, 0.00 MB/s\n")
    assert JobLogFilter().feed(log) == [*CONDENSED,
                                        "2026-12-06 18:14:00,932\tINFO streaming_executor.py:371 -- ✔️  Dataset d_0 "
                                        "execution finished in 57.49 seconds",
                                        "18:14:05 INFO codemill.filter: filter: 0.0 MB in 63.6 s, 0.00 MB/s"]


def test_lines_cut_between_chunks_are_joined_and_a_cut_block_is_flushed():
    shown = JobLogFilter()
    printed = []
    for start in range(0, len(BLOCK) - 40, 37):  # chunks of 37 characters, cutting lines anywhere
        printed += shown.feed(BLOCK[start:start + 37])
    printed += shown.feed(BLOCK[start + 37:-80])  # the log ends before the block's closing line
    printed += shown.flush()
    assert printed == CONDENSED[:2] + [CONDENSED[2].split(" (")[0] + " (0 tasks, 4 queued blocks, backpressured)"]
    assert JobLogFilter().feed("no newline yet") == []
