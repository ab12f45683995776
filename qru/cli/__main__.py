"""``python -m qru.cli``: the same as the ``qru`` console script (dashboard jobs start it this way)."""
import sys

from qru.cli import main

sys.exit(main())
