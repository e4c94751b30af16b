"""Mean ± std over seeds for a multirun directory (see difformer.aggregate)."""
import sys

from difformer.aggregate import main

if __name__ == "__main__":
    sys.exit(main())
