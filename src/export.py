"""Export the final binary model of a finished run as a real 1-bit model (Larq Compute Engine TFLite).

    python src/export.py run=outputs/runs/2026-01-01/12-00-00-abc123            # -> <run dir>/model.tflite
    python src/export.py run=<run dir> threads=2                                # latency with 2 threads

Builds the larq/Keras graph of the run's final model from onebit's module tree (weight scales folded into
BatchNorm), converts it with LCE, checks it against PyTorch on the full test split (top-1 agreement >= 99.9 %),
measures its size against onebit's memory count and its batch-1 latency against the real-valued twin exported
the same way (float TFLite) and PyTorch, then writes ``model.tflite`` and ``twin.tflite`` into the run directory
and the results into its record (``export``). Needs ``pip install -e '.[export]'``. A bad argument, a run without
a finished binary stage, a layer without a 1-bit equivalent or a missing extra is one ``onebit: error:`` line
(exit 2) and nothing written.
"""

from __future__ import annotations

import sys

from onebit.core.errors import ConfigError

KEYS = {
    "run": "a run directory (with record.json), or the Hydra job folder of a run (with job.json)",
    "threads": "threads for the latency measurement (default 1)",
    "min_agreement": "the smallest share of test images whose top-1 class must equal PyTorch's (default 0.999)",
    "out": "also write the export's results as JSON to this file",
}
HELP = """onebit export: the final binary model of a finished run as a real 1-bit model (LCE .tflite).

usage: python src/export.py run=<dir> [threads=N] [min_agreement=0.999] [out=<file>]

arguments (key=value, as with src/train.py):
""" + "\n".join(f"  {k:<8} {v}" for k, v in KEYS.items()) + """

Writes <run dir>/model.tflite (1-bit, LCE) and <run dir>/twin.tflite (the real-valued twin, float TFLite) and
records the checks and measurements in <run dir>/record.json. Needs: pip install -e '.[export]'

The check: the LCE model's top-1 class equals PyTorch's on >= min_agreement of the test split (0.999). Logits are
equal up to float rounding except where rounding moves a pre-sign value across 0; a trained model's margins
absorb that, an untrained 1000-class model's (a smoke run) may not: lower min_agreement for it, the record keeps
the value used.
"""


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(HELP)
        return 0
    try:
        from onebit.cli.runs import find_record, parse_args

        args = parse_args(argv, KEYS)
        threads = args.get("threads", "1")
        if not threads.isdigit() or int(threads) < 1:
            raise ConfigError(f"threads={threads!r} is invalid: must be a positive integer")
        agreement = args.get("min_agreement", "0.999")
        try:
            min_agreement = float(agreement)
        except ValueError:
            min_agreement = -1.0
        if not 0.0 <= min_agreement <= 1.0:
            raise ConfigError(f"min_agreement={agreement!r} is invalid: must be a number in [0, 1]")
        record = find_record(args["run"])
        from onebit.deploy.export import export_run, exportable_stage, require_extra, result_lines

        exportable_stage(record)
        require_extra()
        result = export_run(record, threads=int(threads), min_agreement=min_agreement,
                            log=lambda m: print(m, file=sys.stderr))
    except ConfigError as e:
        print(f"onebit: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print("\n".join(result_lines(record, result)))
    if "out" in args:
        from onebit.core.files import atomic_write_json

        atomic_write_json(args["out"], result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
