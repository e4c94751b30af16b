"""difformer's Hydra plugins (a resumable Optuna sweeper)."""
