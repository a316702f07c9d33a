"""``python -m selfref_ghn.tools.bench``: runs :func:`selfref_ghn.tools.bench.cli.main`."""

import sys

from selfref_ghn.tools.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
