"""The package version (read by setup.cfg and recorded in dataset metadata)."""

__version__ = "0.2.0"
