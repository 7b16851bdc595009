"""`python -m codemill.eval` (what `ray job submit` runs): the same as `codemill eval`."""

import sys

from codemill.runner import stage_main

if __name__ == "__main__":
    sys.exit(stage_main("eval"))
