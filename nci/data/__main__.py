"""``python -m nci.data``: the same as ``nci data``."""

import sys

from nci.cli import setup_logging
from nci.data.prepare import main

if __name__ == "__main__":
    setup_logging()
    sys.exit(main())
