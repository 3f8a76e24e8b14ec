"""Evaluate a finished stage of a run: rebuild its data and model from the run's record, load its last or best
checkpoint, and evaluate it on the full test or validation split with a Lightning Trainer (on the CPU).

    python src/eval.py run=outputs/runs/2026-01-01/12-00-00-abc123              # final stage, last weights, test
    python src/eval.py run=<run dir> weights=best split=val out=eval.json        # best val/top1 checkpoint
    python src/eval.py run=<run dir> stage=pretrain                              # any finished stage

Prints one result line (run, stage, weights, split, top-1, top-5, loss, number of images); ``out=FILE`` (or
``--out FILE``) also writes it as JSON. A bad argument is one ``onebit: error:`` line naming the value and the
valid choices (exit 2).
"""

from __future__ import annotations

import sys

from onebit.core.errors import ConfigError

CHOICES = {"weights": ("last", "best"), "split": ("test", "val")}
KEYS = {
    "run": "a run directory (with record.json), or the Hydra job folder of a run (with job.json)",
    "stage": "a finished stage of the run's recipe (default: the final stage)",
    "weights": "last (default): the stage's final weights, which its test/* metrics measured; best: its best "
               "val/top1 epoch",
    "split": "test or val: evaluated in full, also for a smoke run (default: test)",
    "out": "also write the result as JSON to this file",
}
HELP = """onebit eval: evaluate a finished stage of a run on the full test or validation split.

usage: python src/eval.py run=<dir> [stage=<name>] [weights=last|best] [split=test|val] [out=<file>]

arguments (key=value, as with src/train.py):
""" + "\n".join(f"  {k:<8} {v}" for k, v in KEYS.items()) + """

The model is rebuilt from the run's record (its resolved config) and its weights loaded from
<run dir>/checkpoints/<stage>/{last,best}.ckpt; a pretraining stage that reused a cached twin has no checkpoint
in the run: its last weights are the cache entry.
"""


def parse(argv: list[str]) -> dict:
    from onebit.cli.runs import parse_args

    return parse_args(argv, KEYS, CHOICES)


def evaluate(record, stage: str, weights: str, split: str) -> dict:
    """Evaluate the stage's weights on the full split with a real Lightning Trainer on the CPU."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from onebit.core.errors import config_error
    from onebit.tracking.progress import quiet
    from onebit.training.checkpoints import stage_module

    quiet()
    try:
        data = instantiate(OmegaConf.create(record.config).data)
    except Exception as e:  # noqa: BLE001  (the run's data is gone or moved: one line with its real cause)
        raise config_error(e) from None
    module, origin = stage_module(record, stage, weights, data)

    class CountImages(pl.Callback):
        n = 0

        def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
            self.n += len(batch[1])

        on_validation_batch_end = on_test_batch_end

    count = CountImages()
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[count])
    run = trainer.test if split == "test" else trainer.validate
    metrics = run(module, datamodule=data, verbose=False)[0]
    return {"run_dir": record.run_dir, "run_id": record.run_id, "study": record.study, "stage": stage,
            "weights": weights, **origin, "split": split, "top1": float(metrics[f"{split}/top1"]),
            "top5": float(metrics[f"{split}/top5"]), "loss": float(metrics[f"{split}/loss"]), "n": count.n,
            "smoke": list(record.smoke)}


def result_lines(r: dict) -> list[str]:
    epoch = f"epoch {r['epoch']}" if r["epoch"] is not None else "cache entry"
    lines = [(f"onebit eval: run {r['run_id']}  stage {r['stage']}  weights {r['weights']} ({epoch})  split "
              f"{r['split']}  top-1 {r['top1']:.4f}  top-5 {r['top5']:.4f}  loss {r['loss']:.4f}  n {r['n']}  "
              f"({r['run_dir']})")]
    if r["source"] == "cache":
        lines.append(f"onebit eval: note: stage {r['stage']} reused a cached twin (trained by {r['trained_by']}): "
                     f"weights=last is the pretrain cache entry {r['path']}")
    if r["smoke"]:
        lines.append(f"onebit eval: note: SMOKE RUN ({', '.join(r['smoke'])}): its weights come from a shortened "
                     f"run, not a result; the {r['split']} split was evaluated in full")
    return lines


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(HELP)
        return 0
    try:
        from onebit.cli.runs import check_stage, find_record

        args = parse(argv)
        record = find_record(args["run"])
        stage = check_stage(record, args.get("stage"))
        result = evaluate(record, stage, args["weights"], args["split"])
    except ConfigError as e:
        print(f"onebit: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print("\n".join(result_lines(result)))
    if "out" in args:
        from onebit.core.files import atomic_write_json

        atomic_write_json(args["out"], result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
