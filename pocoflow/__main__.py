"""``python -m pocoflow``: the ``pocoflow`` command."""

import sys

from pocoflow.cli import main

sys.exit(main())
