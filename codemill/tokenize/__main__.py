"""`python -m codemill.tokenize --input <dedup output> --out <URI>` (what `ray job submit` runs)."""

import sys

from codemill.tokenize.stage import main

if __name__ == "__main__":
    sys.exit(main())
