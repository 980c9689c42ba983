"""``python -m ws_nas {search,train}``."""

from .cli import main

raise SystemExit(main())
