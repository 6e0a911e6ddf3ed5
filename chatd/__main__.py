"""``python -m chatd``: the same as the ``chatd`` command."""

import sys

from chatd.cli import main

sys.exit(main())
