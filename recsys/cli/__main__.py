"""``python -m recsys.cli``: the ``recsys`` command line."""

import sys

from recsys.cli.main import main

sys.exit(main())
