"""``python -m logtrick``: the ``logtrick`` command line (see :mod:`logtrick.cli`)."""

import sys

from logtrick.cli import main

if __name__ == "__main__":
    sys.exit(main())
