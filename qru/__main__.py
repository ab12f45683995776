"""``python -m qru``: the ``qru`` command (dashboard jobs start it this way)."""
import sys

from qru import cli

sys.exit(cli.main())
