"""Hyper-parameter studies with Optuna (the ``sweep`` extra), shared by many processes.

:mod:`.search_space` turns Hydra's sweep syntax (``choice``, ``range``, ``interval``,
``tag(log, ...)``) into Optuna distributions; :mod:`.study` opens a study on sqlite, an RDB
server or a journal file, fixes its budget as waiting trials, and hands them out to the
processes that feed it; :mod:`.trial` is the job's side: it reports each epoch's valid score
and stops a pruned trial. The Hydra plugin (``hydra/sweeper=difformer_optuna``) lives in
``hydra_plugins.difformer_sweeper``, where Hydra looks for plugins.
"""
