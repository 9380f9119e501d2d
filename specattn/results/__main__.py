"""``python -m specattn.results collect|plots|notebook|intervals|decoding``: see :mod:`specattn.results.collect`."""

import sys

from .collect import main

sys.exit(main())
