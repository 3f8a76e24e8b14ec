"""onebit's entry point: ``python src/train.py [overrides]`` (the same as ``onebit-train``; see
``onebit.cli.train``).

    python src/train.py                                        # Bi-Real-18 on digits: clip pretraining -> binary
    python src/train.py -m sign=approx,ste shortcut=true,false # a Hydra multirun: 4 jobs, one record each
"""

import sys

from onebit.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
