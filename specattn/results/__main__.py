"""``python -m specattn.results collect|plots``: see :mod:`specattn.results.collect`."""

import sys

from .collect import main

sys.exit(main())
