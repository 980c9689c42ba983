"""``python -m ws_train`` = the ``ws-train`` command."""

from .cli import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
