"""runform's version (one place; ``runform.__version__`` re-exports it)."""

__version__ = "0.1.0"
