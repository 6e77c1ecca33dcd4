"""Command-line entry points (absl flags); run as ``python -m experiments.X``."""
