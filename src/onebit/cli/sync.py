"""Upload every offline W&B run under a root (default ``outputs/``: runs, sweeps, tables) in one command.

    python -m onebit.cli.sync                 # every offline run under outputs/ not yet uploaded
    python -m onebit.cli.sync /data/outputs --dry-run
    python -m onebit.cli.sync -p onebit -e my-team

Each onebit stage writes one W&B run directory ``<run dir>/wandb/offline-run-<time>-<id>/`` (``onebit.loggers``),
at any depth under the root, where ``wandb sync`` does not look. This finds them all and hands them, sorted (a
resumed run's attempts in the order they ran), to ``wandb sync --yes``, which leaves out the runs it uploaded
before, uploads the others and marks them; ``--dry-run`` is its own: it lists them and uploads nothing. Uploading
needs a W&B API key (``WANDB_API_KEY`` or ``wandb login``); without one the command stops with one line instead of
asking.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from onebit.tracking.loggers import wandb_credentials

BATCH = 200  # run directories per `wandb sync` call (a command line of bounded length)


def offline_runs(root: Path) -> list[Path]:
    """Every offline W&B run directory under ``root``, sorted."""
    return sorted({log.parent for log in root.rglob("offline-run-*/*.wandb")})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m onebit.cli.sync", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", default="outputs", help="where to look (default: outputs)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be uploaded; upload nothing")
    parser.add_argument("-p", "--project", help="upload into this W&B project (default: the run's own, onebit)")
    parser.add_argument("-e", "--entity", help="upload into this W&B entity (default: your default entity)")
    args = parser.parse_args(argv)
    root = Path(args.root)
    if not root.is_dir():
        print(f"onebit: error: {root} is not a directory (the outputs root; default: outputs)", file=sys.stderr)
        return 2
    runs = offline_runs(root)
    print(f"onebit sync: {len(runs)} offline W&B run(s) under {root}", flush=True)
    if not runs:
        return 0
    if not args.dry_run and not wandb_credentials():
        print("onebit: error: no W&B API key: set WANDB_API_KEY or run `wandb login`, then run this again",
              file=sys.stderr)
        return 1
    command = [sys.executable, "-m", "wandb", "sync", "--yes", *(["--dry-run"] if args.dry_run else []),
               *(["--project", args.project] if args.project else []),
               *(["--entity", args.entity] if args.entity else [])]
    failed = [subprocess.run([*command, *map(str, runs[i:i + BATCH])], check=False).returncode
              for i in range(0, len(runs), BATCH)]
    return 1 if any(failed) else 0


if __name__ == "__main__":
    sys.exit(main())
