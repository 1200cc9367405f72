"""`python -m <package> serve|dev|migrate|gen` (see `anchor/cli.py`)."""

from .anchor.cli import main

main()
