"""``python -m meshlib``: the command line (see ``meshlib.cli``)."""

import sys

from meshlib.cli import main

if __name__ == "__main__":
    sys.exit(main())
