"""`python -m codemill.tokenize` (what `ray job submit` runs): the same as `codemill tokenize`."""

import sys

from codemill.runner import stage_main

if __name__ == "__main__":
    sys.exit(stage_main("tokenize"))
