"""The network: binarizers (:mod:`~onebit.nn.quantizers`), binary layers (:mod:`~onebit.nn.layers`), the model
families (:mod:`~onebit.nn.models`), their counts (:mod:`~onebit.nn.summary`, :mod:`~onebit.nn.efficiency`), the
parameter groups and schedules (:mod:`~onebit.nn.optim`) and the speed options (:mod:`~onebit.nn.speed`).
Plain PyTorch: nothing here knows about configs, records or training loops."""
