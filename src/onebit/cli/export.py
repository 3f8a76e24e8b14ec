"""onebit-export (``python src/export.py``): the final binary model of a finished run as a real 1-bit model (Larq
Compute Engine TFLite).

    onebit-export outputs/runs/2026-01-01/12-00-00-abc123        # -> <run dir>/model.tflite
    onebit-export RUN --threads 2                                # latency with 2 threads
    python src/export.py run=RUN threads=2                       # the older key=value spelling, still accepted

Builds the larq/Keras graph of the run's final model from onebit's module tree (weight scales folded into
BatchNorm), converts it with LCE, checks it against PyTorch on the full test split (top-1 agreement >= 99.9 %),
measures its size against onebit's memory count and its batch-1 latency against the real-valued twin exported
the same way (float TFLite) and PyTorch, then writes ``model.tflite`` and ``twin.tflite`` into the run directory
and the results into its record (``export``). Needs ``pip install -e '.[export]'``. A bad argument, a run without
a finished binary stage, a layer without a 1-bit equivalent or a missing extra is one ``onebit: error:`` line
(exit 2) and nothing written. :func:`main` returns the exit status: callable in-process.
"""

from __future__ import annotations

import argparse
import sys

from onebit.cli.runs import RUN_HELP, Parser, run_on_record

HELP = {"run": RUN_HELP, "threads": "threads for the latency measurement (default 1)",
        "min_agreement": "the smallest share of test images whose top-1 class must equal PyTorch's (default 0.999)",
        "out": "also write the export's results as JSON to this file"}  # also the older key=value spelling's keys
EPILOG = """Writes <run dir>/model.tflite (1-bit, LCE) and <run dir>/twin.tflite (the real-valued twin, float TFLite) and
records the checks and measurements in <run dir>/record.json. Needs: pip install -e '.[export]'

The check: the LCE model's top-1 class equals PyTorch's on >= --min-agreement of the test split (0.999). Logits
are equal up to float rounding except where rounding moves a pre-sign value across 0; a trained model's margins
absorb that, an untrained 1000-class model's (a smoke run) may not: lower --min-agreement for it, the record keeps
the value used.

The older spelling key=value (run=DIR threads=N min_agreement=X out=FILE) is still accepted."""


def threads(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is invalid: must be a positive integer")
    return int(text)


def agreement(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is invalid: must be a number in [0, 1]")
    return value


def parser() -> Parser:
    p = Parser(prog="onebit-export", epilog=EPILOG,
               usage="onebit-export RUN [--threads N] [--min-agreement X] [--out FILE]",
               description="onebit export: the final binary model of a finished run as a real 1-bit model (LCE "
                           ".tflite).")
    p.add_argument("run", nargs="?", metavar="RUN", help=HELP["run"])
    p.add_argument("--threads", type=threads, default=1, metavar="N", help=HELP["threads"])
    p.add_argument("--min-agreement", type=agreement, default=0.999, metavar="X", help=HELP["min_agreement"])
    p.add_argument("-o", "--out", metavar="FILE", help=HELP["out"])
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``onebit-export argv`` (default: the process's command line) and return its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)

    def act(record, args):
        from onebit.deploy import export_run, exportable_stage, require_extra, result_lines  # TensorFlow: when asked

        exportable_stage(record)
        require_extra()
        result = export_run(record, threads=args.threads, min_agreement=args.min_agreement,
                            log=lambda m: print(m, file=sys.stderr))
        return result_lines(record, result), result

    return run_on_record(argv, parser(), HELP, act)
