"""``python -m stmil``: the same entry point as the ``stmil`` console script."""

import sys

from stmil.cli import main

sys.exit(main())
