"""onebit-eval (``python src/eval.py``): evaluate a finished stage of a run. Rebuild its data and model from the
run's record, load its last or best checkpoint, and evaluate it on the full test or validation split with a
Lightning Trainer (on the CPU).

    onebit-eval outputs/runs/2026-01-01/12-00-00-abc123             # final stage, last weights, test split
    onebit-eval RUN --weights best --split val --out eval.json      # best val/top1 checkpoint
    onebit-eval RUN --stage pretrain                                # any finished stage
    python src/eval.py run=RUN weights=best out=eval.json           # the older key=value spelling, still accepted

Prints one result line (run, stage, weights and their epoch, split, top-1, top-5, loss, number of images);
``--out FILE`` also writes it as JSON. Epochs are 1-based, as training logs them: ``epoch 3/8`` is the third of
the stage's 8 epochs, and the JSON's ``epoch`` is the same 1-based number (Lightning's 0-based epoch + 1; ``epochs``
the stage's total; both ``null``/absent for a cache entry). A bad argument is one ``onebit: error:`` line naming
the value and the valid choices (exit 2). :func:`main` returns the exit status: callable in-process.
"""

from __future__ import annotations

import sys

from onebit.cli.runs import RUN_HELP, Parser, check_stage, run_on_record

HELP = {"run": RUN_HELP, "stage": "a finished stage of the run's recipe (default: the final stage)",
        "weights": "last (default): the stage's final weights, which its test/* metrics measured; best: its best "
                   "val/top1 epoch",
        "split": "test or val: evaluated in full, also for a smoke run (default: test)",
        "out": "also write the result as JSON to this file"}  # also the older key=value spelling's keys
EPILOG = """The model is rebuilt from the run's record (its resolved config) and its weights loaded from
<run dir>/checkpoints/<stage>/{last,best}.ckpt; a pretraining stage that reused a cached twin has no checkpoint
in the run: its last weights are the cache entry.

The older spelling key=value (run=DIR stage=NAME weights=best split=val out=FILE) is still accepted."""


def parser() -> Parser:
    p = Parser(prog="onebit-eval", epilog=EPILOG,
               usage="onebit-eval RUN [--stage NAME] [--weights last|best] [--split test|val] [--out FILE]",
               description="onebit eval: evaluate a finished stage of a run on the full test or validation split.")
    p.add_argument("run", nargs="?", metavar="RUN", help=HELP["run"])
    p.add_argument("--stage", metavar="NAME", help=HELP["stage"])
    p.add_argument("--weights", default="last", choices=("last", "best"), help=HELP["weights"])
    p.add_argument("--split", default="test", choices=("test", "val"), help=HELP["split"])
    p.add_argument("-o", "--out", metavar="FILE", help=HELP["out"])
    return p


def evaluate(record, stage: str, weights: str, split: str) -> dict:
    """Evaluate the stage's weights on the full split with a real Lightning Trainer on the CPU; ``epoch`` 1-based."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from onebit.core import cluster
    from onebit.core.errors import config_error
    from onebit.tracking.progress import quiet
    from onebit.training.checkpoints import stage_module

    quiet()
    try:
        data = instantiate(OmegaConf.create(record.config).data)
    except Exception as e:  # noqa: BLE001  (the run's data is gone or moved: one line with its real cause)
        raise config_error(e) from None
    module, origin = stage_module(record, stage, weights, data)
    if origin.get("epoch") is not None:  # Lightning's 0-based epoch -> the 1-based one training logs
        origin = {**origin, "epoch": origin["epoch"] + 1, "epochs": record.stages[stage].epochs or None}

    class CountImages(pl.Callback):
        n = 0

        def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
            self.n += len(batch[1])

        on_validation_batch_end = on_test_batch_end

    count = CountImages()
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[count],
                         plugins=cluster.plugins())
    run = trainer.test if split == "test" else trainer.validate
    metrics = run(module, datamodule=data, verbose=False)[0]
    return {"run_dir": record.run_dir, "run_id": record.run_id, "study": record.study, "stage": stage,
            "weights": weights, **origin, "split": split, "top1": float(metrics[f"{split}/top1"]),
            "top5": float(metrics[f"{split}/top5"]), "loss": float(metrics[f"{split}/loss"]), "n": count.n,
            "smoke": list(record.smoke)}


def result_lines(r: dict) -> list[str]:
    if r.get("epoch") is None:
        epoch = "cache entry"
    else:
        epoch = f"epoch {r['epoch']}" + (f"/{r['epochs']}" if r.get("epochs") else "")
    lines = [(f"onebit eval: run {r['run_id']}  stage {r['stage']}  weights {r['weights']} ({epoch})  split "
              f"{r['split']}  top-1 {r['top1']:.4f}  top-5 {r['top5']:.4f}  loss {r['loss']:.4f}  n {r['n']}  "
              f"({r['run_dir']})")]
    if r["source"] == "cache":
        lines.append(f"onebit eval: note: stage {r['stage']} reused a cached twin (trained by {r['trained_by']}): "
                     f"--weights last is the pretrain cache entry {r['path']}")
    if r["smoke"]:
        lines.append(f"onebit eval: note: SMOKE RUN ({', '.join(r['smoke'])}): its weights come from a shortened "
                     f"run, not a result; the {r['split']} split was evaluated in full")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run ``onebit-eval argv`` (default: the process's command line) and return its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)

    def act(record, args):
        result = evaluate(record, check_stage(record, args.stage), args.weights, args.split)
        return result_lines(result), result

    return run_on_record(argv, parser(), HELP, act)
