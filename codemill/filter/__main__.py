"""`python -m codemill.filter` (what `ray job submit` runs): the same as `codemill filter`."""

import sys

from codemill.runner import stage_main

if __name__ == "__main__":
    sys.exit(stage_main("filter"))
