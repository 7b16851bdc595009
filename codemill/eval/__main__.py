"""`python -m codemill.eval` (what `ray job submit` runs): the same as `codemill eval`."""

import sys

from codemill.eval.stage import main

if __name__ == "__main__":
    sys.exit(main())
