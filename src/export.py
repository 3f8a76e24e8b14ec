"""``python src/export.py RUN [--threads N] [--min-agreement X] [--out FILE]``: the same as ``onebit-export``
(see ``onebit.cli.export``)."""
import sys

from onebit.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
