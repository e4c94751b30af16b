"""Reproduce a paper table (see difformer.reproduction.reproduce): python scripts/reproduce.py --table 1"""
import sys

from difformer.reproduction.reproduce import main

if __name__ == "__main__":
    sys.exit(main())
