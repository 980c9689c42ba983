"""``python -m ws_sushi`` = ``ws-sushi`` (see :mod:`ws_sushi.cli`)."""

import sys

from .cli import main

sys.exit(main())
