"""Thin entry point: ``python train.py [overrides]`` (see ``difformer.cli``)."""
from difformer.cli import main

if __name__ == "__main__":
    main()
