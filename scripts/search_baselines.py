"""The baseline search (see difformer.reproduction.baseline_search): python scripts/search_baselines.py --dataset cora"""
import sys

from difformer.reproduction.baseline_search import main

if __name__ == "__main__":
    sys.exit(main())
