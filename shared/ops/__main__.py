"""``python -m shared.ops``: the ops command line (shared/ops/cli.py)."""

import logging
import sys

from shared.ops.cli import main

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
sys.exit(main())
