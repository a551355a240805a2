"""The package version (one place; ``mel2mel.__version__`` and exports read it)."""

__version__ = "0.1.0"
