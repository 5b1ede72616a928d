"""``python -m clipsearch.train ...``: the training program (see ``clipsearch.train.loop.main``)."""

import logging
import sys

from clipsearch.train.loop import main

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    sys.exit(main())
