"""``python -m spanstore``: the ``spanstore`` command (see :mod:`spanstore.cli`)."""

import sys

from spanstore.cli import main

if __name__ == "__main__":
    sys.exit(main())
