"""End-to-end jobs a user can call from Python; experiments/ wraps them.

* :mod:`~pgmoe_jax.workflows.evaluate_run`: evaluate a workdir on datasets
  and write the report (``experiments.evaluate``).
* :mod:`~pgmoe_jax.workflows.studies`: the reproduction studies behind
  RESULTS.md: :func:`~pgmoe_jax.workflows.studies.scaling`,
  :func:`~pgmoe_jax.workflows.studies.warm_start`,
  :func:`~pgmoe_jax.workflows.studies.ablation` (``experiments.reproduce``).
* :mod:`~pgmoe_jax.workflows.grid_runs`: the grid of training runs
  (models x losses x label counts) with its tables and figures.
* :mod:`~pgmoe_jax.workflows.sweep`: hyperparameter sweeps as ordinary
  training runs (trials, names, overrides, commands, status);
  :mod:`~pgmoe_jax.workflows.sweep_runner` runs them locally
  (:mod:`~pgmoe_jax.workflows.sweep_slots`: each one's share of the
  machine) and :mod:`~pgmoe_jax.workflows.leaderboard` ranks them
  (``experiments.sweep``).

This is the top layer: it may import every other part of the package.
"""
