"""The bottom layer: what every other part of onebit may use and which uses nothing of onebit.

- :mod:`~onebit.core.errors`: ``ConfigError`` and the one-line form of any exception.
- :mod:`~onebit.core.paths`: where the repository's ``conf/`` and ``sweeps/`` are, and the output root.
- :mod:`~onebit.core.registry`: the facts written once: option groups and their options, stage names, metric names.
- :mod:`~onebit.core.files`: atomic writes. :mod:`~onebit.core.killpoints`: test hooks that kill the process.
- :mod:`~onebit.core.dist`: which distributed rank this process is.
"""
