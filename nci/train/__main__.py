"""``python -m nci.train ...`` (and ``torchrun --nproc_per_node N -m nci.train ...``)."""

import sys

from nci.train.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m nci.train"))
