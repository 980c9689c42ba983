"""The package's version, its one source: pyproject.toml reads it, and ``make install`` re-runs when it
changes."""

__version__ = "0.1.0"
