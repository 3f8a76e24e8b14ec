"""What a run leaves behind and what identifies it: the typed, versioned record (:mod:`~onebit.records.record`),
the job / twin / cell identities (:mod:`~onebit.records.identity`), a run directory's layout
(:mod:`~onebit.records.layout`) and the recipe a record's stages follow, as pure data
(:mod:`~onebit.records.recipe`)."""
