"""Command-line entry points (absl flags): ``python -m experiments.X``."""
