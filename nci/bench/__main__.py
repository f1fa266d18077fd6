"""``python -m nci.bench``: the same as ``nci bench``."""

import sys

from nci.bench.cli import main
from nci.cli import setup_logging

if __name__ == "__main__":
    setup_logging()
    sys.exit(main())
