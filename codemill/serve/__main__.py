import sys

from codemill.serve.cli import main

sys.exit(main())
