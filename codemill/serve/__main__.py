import sys

from codemill.serve.stage import main

sys.exit(main())
