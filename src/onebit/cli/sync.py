"""onebit-sync (``python -m onebit.cli.sync``): upload every offline W&B run under the outputs root (runs, sweeps,
tables) in one command.

    onebit-sync                               # every offline run under the root not yet uploaded
    onebit-sync --root /data/outputs --dry-run
    onebit-sync -p onebit -e my-team

The root (``--root``; a positional ROOT is accepted as the older spelling) defaults to ``$ONEBIT_OUTPUTS``, else
``outputs`` (``onebit.core.paths.output_root``), as for every onebit command. Each onebit stage writes one W&B run
directory ``<run dir>/wandb/offline-run-<time>-<id>/`` (``onebit.tracking.loggers``), at any depth under the root,
where ``wandb sync`` does not look. This finds them all and hands them, sorted (a resumed run's attempts in the
order they ran), to ``wandb sync --yes``, which leaves out the runs it uploaded before, uploads the others and
marks them; ``--dry-run`` is its own: it lists them and uploads nothing. ``wandb sync``'s output is passed on to
this command's stdout. Uploading needs a W&B API key (``WANDB_API_KEY`` or ``wandb login``); without one the
command stops with one line instead of asking. :func:`main` returns the exit status: callable in-process.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from onebit.cli.runs import Parser, run_main
from onebit.core.errors import ConfigError
from onebit.core.paths import output_root
from onebit.tracking.wandb_run import wandb_credentials

BATCH = 200  # run directories per `wandb sync` call (a command line of bounded length)


def offline_runs(root: Path) -> list[Path]:
    """Every offline W&B run directory under ``root``, sorted."""
    return sorted({log.parent for log in root.rglob("offline-run-*/*.wandb")})


def parser() -> Parser:
    p = Parser(prog="onebit-sync", usage="onebit-sync [--root DIR] [--dry-run] [-p PROJECT] [-e ENTITY]",
               description=__doc__.split("\n\n")[0])
    p.add_argument("--root", metavar="DIR", help="where to look (default: $ONEBIT_OUTPUTS, else outputs)")
    p.add_argument("old_root", nargs="?", metavar="ROOT", help=argparse.SUPPRESS)  # the older spelling of --root
    p.add_argument("--dry-run", action="store_true", help="list what would be uploaded; upload nothing")
    p.add_argument("-p", "--project", help="upload into this W&B project (default: the run's own, onebit)")
    p.add_argument("-e", "--entity", help="upload into this W&B entity (default: your default entity)")
    return p


def wandb_sync(command: list[str]) -> int:
    """Run ``wandb sync``, its output passed on line by line to this command's (current) stdout."""
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                          text=True, errors="replace") as proc:
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
    return proc.returncode


def main(argv: list[str] | None = None) -> int:
    """Run ``onebit-sync argv`` (default: the process's command line) and return its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)

    def body() -> int:
        args = parser().parse_args(argv)
        if args.root and args.old_root and args.root != args.old_root:
            raise ConfigError(f"two roots: --root {args.root!r} and {args.old_root!r}; give one")
        root = Path(args.root or args.old_root or output_root())
        if not root.is_dir():
            print(f"onebit: error: {root} is not a directory (the outputs root; default: $ONEBIT_OUTPUTS, else "
                  "outputs)", file=sys.stderr)
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
        failed = [wandb_sync([*command, *map(str, runs[i:i + BATCH])]) for i in range(0, len(runs), BATCH)]
        return 1 if any(failed) else 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
