"""Run directories: the name of every file a run writes (rundir), atomic writes (files)."""
