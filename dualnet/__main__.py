"""`python -m dualnet ...` is the `dualnet` command."""

import sys

from .cli import main

sys.exit(main())
