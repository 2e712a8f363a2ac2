"""``python -m sklearn_npll``: the command-line program (see :mod:`sklearn_npll.cli`)."""

import sys

from .cli import main

sys.exit(main())
