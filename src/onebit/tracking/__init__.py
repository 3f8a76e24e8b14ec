"""What a run shows and sends while it trains: Lightning loggers (:mod:`~onebit.tracking.loggers`), W&B runs, tags
and artifacts (:mod:`~onebit.tracking.wandb_run`), the one W&B <-> record mapping
(:mod:`~onebit.tracking.wandb_record`),
progress bars and per-epoch lines (:mod:`~onebit.tracking.progress`)."""
