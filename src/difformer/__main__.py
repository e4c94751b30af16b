"""``python -m difformer [overrides]``: the same as ``train.py`` / ``difformer-train``."""

from difformer.cli import main

if __name__ == "__main__":
    main()
