"""python -m minicount: the command line (minicount/cli.py)."""

import sys

from .cli import main

sys.exit(main())
