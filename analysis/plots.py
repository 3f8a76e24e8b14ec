"""Figures from your own runs: ``onebit.cli.plots`` (``python analysis/plots.py --help``)."""
import sys

from onebit.cli.plots import main

if __name__ == "__main__":
    sys.exit(main())
