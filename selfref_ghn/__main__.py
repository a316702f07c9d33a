"""``python -m selfref_ghn``: the ``selfref-ghn`` command (:mod:`selfref_ghn.tools.cli`)."""

import sys

from selfref_ghn.tools.cli import main

if __name__ == "__main__":
    sys.exit(main())
