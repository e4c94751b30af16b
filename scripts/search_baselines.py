"""The baseline search (see difformer.baseline_search): python scripts/search_baselines.py --dataset cora"""
import sys

from difformer.baseline_search import main

if __name__ == "__main__":
    sys.exit(main())
