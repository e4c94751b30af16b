"""Mean ± std over seeds for a multirun directory (see difformer.reproduction.aggregate)."""
import sys

from difformer.reproduction.aggregate import main

if __name__ == "__main__":
    sys.exit(main())
