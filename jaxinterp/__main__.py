"""``python -m jaxinterp ...``: the command line (see `jaxinterp.apps.cli`)."""

import sys

from .apps.cli import main

if __name__ == "__main__":
    sys.exit(main())
