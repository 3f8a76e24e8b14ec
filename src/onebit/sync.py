"""Upload every offline W&B run under a root (default ``outputs/``: single runs and sweeps) in one command.

    python -m onebit.sync                 # every offline run under outputs/ not yet synced
    python -m onebit.sync /data/outputs --dry-run
    python -m onebit.sync -p onebit -e my-team

Each onebit stage writes one W&B run directory ``<run dir>/wandb/offline-run-<time>-<id>/`` (``onebit.loggers``).
This finds them all, at any depth, leaves out the ones ``wandb sync`` marked as uploaded (its
``run-<id>.wandb.synced`` file beside the log) and hands the rest to ``wandb sync``, which uploads them (a
resumed run's attempts, which share one W&B id, in the order they ran) and marks them. ``--dry-run`` lists them
with their counts and uploads nothing. Uploading needs a W&B API key (``WANDB_API_KEY`` or ``wandb login``);
without one the command stops with one line instead of asking.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

BATCH = 200  # runs per `wandb sync` call (all attempts of one W&B id in the same call)


def offline_runs(root: Path) -> tuple[list[Path], list[Path]]:
    """(to upload, already synced): every offline W&B run directory under ``root``, sorted."""
    todo, done = [], []
    for run in sorted({log.parent for log in root.rglob("offline-run-*/*.wandb")}):
        synced = all(log.with_suffix(".wandb.synced").exists() for log in run.glob("*.wandb"))
        (done if synced else todo).append(run)
    return todo, done


def wandb_id(run: Path) -> str:
    """The W&B run id of ``offline-run-<YYYYmmdd_HHMMSS>-<id>``."""
    return run.name.split("-", 3)[-1]


def where(run: Path, root: Path) -> str:
    """``runs/`` or ``sweeps/<study>/`` (the part of the root a run lies in), for the counts."""
    parts = run.relative_to(root).parts
    return f"{parts[0]}/{parts[1]}/" if parts[0] == "sweeps" and len(parts) > 2 else f"{parts[0]}/"


def batches(runs: list[Path]) -> list[list[Path]]:
    """Groups of at most :data:`BATCH` runs, the attempts of one W&B id never split."""
    by_id: dict[str, list[Path]] = {}
    for run in runs:
        by_id.setdefault(wandb_id(run), []).append(run)
    out: list[list[Path]] = [[]]
    for group in by_id.values():
        if out[-1] and len(out[-1]) + len(group) > BATCH:
            out.append([])
        out[-1].extend(group)
    return [b for b in out if b]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m onebit.sync", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", default="outputs", help="where to look (default: outputs)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be uploaded; upload nothing")
    parser.add_argument("-p", "--project", help="upload into this W&B project (default: the run's own, onebit)")
    parser.add_argument("-e", "--entity", help="upload into this W&B entity (default: your default entity)")
    args = parser.parse_args(argv)
    root = Path(args.root)
    if not root.is_dir():
        print(f"onebit: error: {root} is not a directory (the outputs root; default: outputs)", file=sys.stderr)
        return 2
    todo, done = offline_runs(root)
    counts = ", ".join(f"{n} in {place}" for place, n in sorted(Counter(where(r, root) for r in todo).items()))
    skipped = f"; {len(done)} already synced, left out" if done else ""
    print(f"onebit sync: {len(todo)} offline W&B run(s) to upload under {root}"
          + (f" ({counts})" if counts else "") + skipped)
    for run in todo:
        print(f"  {run.relative_to(root)}")
    if not todo:
        return 0
    options = [*(["--project", args.project] if args.project else []),
               *(["--entity", args.entity] if args.entity else [])]
    if args.dry_run:
        print(f"dry run: nothing uploaded (without --dry-run: wandb sync --yes {' '.join(options)}"
              f"{' ' if options else ''}<these {len(todo)} directories>)")
        return 0
    from onebit.loggers import _wandb_credentials

    if not _wandb_credentials():
        print("onebit: error: no W&B API key: set WANDB_API_KEY or run `wandb login`, then run this again",
              file=sys.stderr)
        return 1
    exe = shutil.which("wandb", path=str(Path(sys.executable).parent)) or shutil.which("wandb")
    command = [exe] if exe else [sys.executable, "-m", "wandb"]
    failed = 0
    for batch in batches(todo):
        failed += subprocess.run([*command, "sync", "--yes", *options, *map(str, batch)], check=False).returncode != 0
    left, _ = offline_runs(root)
    print(f"onebit sync: {len(todo) - len(left)} of {len(todo)} uploaded" + (f"; {len(left)} not (see above)"
                                                                            if left else ""))
    return 1 if failed or left else 0


if __name__ == "__main__":
    sys.exit(main())
