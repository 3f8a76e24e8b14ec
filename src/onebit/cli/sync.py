"""onebit-sync (``python -m onebit.cli.sync``): upload every offline W&B run under the outputs root (runs, sweeps,
tables) in one command.

    onebit-sync                               # every offline run under the root not yet uploaded
    onebit-sync --root /data/outputs --dry-run
    onebit-sync -p onebit -e my-team

The root (``--root``; a positional ROOT is accepted as the older spelling) defaults to ``$ONEBIT_OUTPUTS``, else
``outputs`` (``onebit.core.paths.output_root``), as for every onebit command. Each onebit stage writes one W&B run
directory ``<run dir>/wandb/offline-run-<time>-<id>/`` per attempt (``onebit.tracking.loggers``; a resumed stage
writes one more, whose steps continue the earlier ones', :mod:`onebit.tracking.wandb_run`), at any depth under the
root, where ``wandb sync`` does not look. This finds them all, groups them by W&B run (entity/project/id of the run
record in each ``.wandb`` file) in the order the attempts ran (the run record's ``start_time``, not the folder
name: :func:`offline_attempts`), and hands them to ``wandb sync --yes``, every attempt of a run in the same call
(:func:`batches`): wandb 0.31's ``wandb sync`` uploads the files of one run given in one call one after the other
in order of start time, so the server appends each attempt to the run's history (separate calls would be separate
uploads, in no set order). ``wandb sync`` leaves out the files it uploaded before (``run-<id>.wandb.synced``),
uploads the others and marks them. No ``--id`` is needed (the files name their run) and none is passed: it would
rename every run of the call. A folder whose ``.wandb`` holds no run record (its process killed as it started)
is left out with one line: ``wandb sync`` would stop the whole call on it. ``--dry-run`` lists each run's attempts
in the order they would be uploaded, then ``wandb sync --dry-run``'s own list, and uploads nothing. ``wandb
sync``'s output is passed on to this command's stdout. Uploading needs a W&B API key (``WANDB_API_KEY`` or ``wandb
login``); without one the command stops with one line instead of asking. :func:`main` returns the exit status:
callable in-process.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from onebit.cli.runs import Parser, run_main
from onebit.core.errors import ConfigError
from onebit.core.paths import output_root
from onebit.tracking.wandb_resume import log_run_info
from onebit.tracking.wandb_run import wandb_credentials

BATCH = 200  # run directories per `wandb sync` call (a command line of bounded length)


def offline_attempts(root: Path, project: str | None = None, entity: str | None = None,
                     problems: list[Path] | None = None) -> dict[str, list[Path]]:
    """Every offline W&B run directory under ``root``, grouped by the W&B run it belongs to (``entity/project/id``
    of the run record in its ``.wandb`` file, ``project``/``entity`` overriding the files' as ``wandb sync -p/-e``
    does) and, within a run, in the order its attempts ran: by the run record's ``start_time`` (what ``wandb sync``
    orders them by), then by path. Runs in order of their first attempt's start. Directories without a run
    record go to ``problems`` (if given)."""
    by_run: dict[str, list[tuple[float, Path]]] = {}
    for path in sorted({log.parent for log in root.rglob("offline-run-*/*.wandb")}):
        (log, *_) = sorted(path.glob("*.wandb"))
        info = log_run_info(log)
        if info is None:
            if problems is not None:
                problems.append(path)
            continue
        key = "/".join(p for p in (entity or info["entity"], project or info["project"], info["id"]) if p)
        by_run.setdefault(key, []).append((info["start"], path))
    ordered = {key: [p for _, p in sorted(attempts)] for key, attempts in by_run.items()}
    return dict(sorted(ordered.items(), key=lambda kv: (min(t for t, _ in by_run[kv[0]]), kv[0])))


def offline_runs(root: Path) -> list[Path]:
    """Every offline W&B run directory under ``root`` with a run record: run by run, each run's attempts in the
    order they ran (:func:`offline_attempts`)."""
    return [p for attempts in offline_attempts(root).values() for p in attempts]


def batches(runs: dict[str, list[Path]], size: int = BATCH) -> list[list[Path]]:
    """The directories of ``runs`` (:func:`offline_attempts`) in calls of at most ``size`` directories, a run's
    attempts never split over two calls (a run with more than ``size`` attempts is a call of its own), in order."""
    out: list[list[Path]] = []
    for attempts in runs.values():
        if out and len(out[-1]) + len(attempts) <= size:
            out[-1].extend(attempts)
        else:
            out.append(list(attempts))
    return out


def listing(runs: dict[str, list[Path]], root: Path) -> list[str]:
    """Each run and its attempts not yet uploaded, in the order they would be uploaded (paths under ``root``)."""
    lines = []
    for key, attempts in runs.items():
        todo = [p for p in attempts if not any(p.glob("*.wandb.synced"))]
        if not todo:
            continue
        where = [str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in todo]
        if len(attempts) == 1:
            lines.append(f"  {key}: {where[0]}")
        else:
            lines.append(f"  {key}: {len(attempts)} attempts, uploaded in the order they ran"
                         f"{f' ({len(attempts) - len(todo)} uploaded before)' if len(todo) < len(attempts) else ''}")
            lines += [f"    {i}. {w}" for i, w in enumerate(where, 1)]
    return lines


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
        problems: list[Path] = []
        runs = offline_attempts(root, args.project, args.entity, problems)
        folders = sum(map(len, runs.values()))
        print(f"onebit sync: {len(runs)} offline W&B run(s){f' in {folders} folders' if folders != len(runs) else ''}"
              f" under {root}", flush=True)
        for path in problems:
            print(f"onebit: warning: {path} left out: its .wandb file holds no W&B run record (its process ended as "
                  "it started)", file=sys.stderr)
        if not runs:
            return 0
        if args.dry_run:
            print("\n".join(listing(runs, root)), flush=True)
        if not args.dry_run and not wandb_credentials():
            print("onebit: error: no W&B API key: set WANDB_API_KEY or run `wandb login`, then run this again",
                  file=sys.stderr)
            return 1
        command = [sys.executable, "-m", "wandb", "sync", "--yes", *(["--dry-run"] if args.dry_run else []),
                   *(["--project", args.project] if args.project else []),
                   *(["--entity", args.entity] if args.entity else [])]
        failed = [wandb_sync([*command, *map(str, batch)]) for batch in batches(runs)]
        return 1 if any(failed) else 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
