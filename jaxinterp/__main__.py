"""``python -m jaxinterp ...``: the command line (see `jaxinterp.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
