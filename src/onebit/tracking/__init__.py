"""What a run shows and sends while it trains: Lightning loggers (:mod:`~onebit.tracking.loggers`), W&B runs, tags
and artifacts (:mod:`~onebit.tracking.wandb_run`), a resumed stage's W&B steps
(:mod:`~onebit.tracking.wandb_resume`) and the epochs its earlier attempts did not log
(:mod:`~onebit.tracking.replay`), the one W&B <-> record mapping (:mod:`~onebit.tracking.wandb_record`), per-layer
diagnostics (:mod:`~onebit.tracking.diagnostics`), the user's callbacks (:mod:`~onebit.tracking.callbacks`), and
progress bars and per-epoch lines (:mod:`~onebit.tracking.progress`)."""
