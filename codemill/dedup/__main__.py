import sys

from codemill.dedup.stage import main

sys.exit(main())
