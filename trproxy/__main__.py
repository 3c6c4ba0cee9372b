"""``python -m trproxy``: the same as the ``trproxy`` command."""

import sys

from .cli import main

sys.exit(main())
