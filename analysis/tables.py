"""``python analysis/tables.py [TABLE] [--root DIR] [--format F] ...``: the same as ``onebit-tables`` (see
``onebit.cli.tables``)."""
import sys

from onebit.cli.tables import main

if __name__ == "__main__":
    sys.exit(main())
