"""``python -m hub``: the same as the ``hub`` console script."""

from __future__ import annotations

import sys

from hub.cli import main

sys.exit(main())
