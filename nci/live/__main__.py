import sys

from nci.cli import setup_logging
from nci.live.cli import main

setup_logging()
sys.exit(main(prog="python -m nci.live"))
