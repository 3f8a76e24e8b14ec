"""``python src/eval.py RUN [--stage NAME] [--weights last|best] [--split test|val] [--out FILE]``: the same as
``onebit-eval`` (see ``onebit.cli.eval``)."""
import sys

from onebit.cli.eval import main

if __name__ == "__main__":
    sys.exit(main())
