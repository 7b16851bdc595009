import sys

from codemill.train.stage import main

sys.exit(main())
