"""What a run shows and sends while it trains: Lightning loggers and the W&B <-> record mapping
(:mod:`~onebit.tracking.loggers`), progress bars and per-epoch lines (:mod:`~onebit.tracking.progress`)."""
