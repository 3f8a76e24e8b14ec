"""Training a job: checks of the composed config (:mod:`~onebit.training.checks`), building data and models
(:mod:`~onebit.training.build`), the LightningModule (:mod:`~onebit.training.module`), checkpoints and the pretrain
cache (:mod:`~onebit.training.checkpoints`, :mod:`~onebit.training.cache`), the stage loop
(:mod:`~onebit.training.loop`) and a job's life: index, locks, record, sweep summary (:mod:`~onebit.training.jobs`)."""
