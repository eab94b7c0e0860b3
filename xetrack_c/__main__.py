"""``python -m xetrack_c ...`` runs the ``xt`` command line."""

import sys

from xetrack_c.cli import main

sys.exit(main())
