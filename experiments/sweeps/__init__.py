"""Sweep files, each defining ``get_sweep()`` (see experiments/sweep.py)."""
