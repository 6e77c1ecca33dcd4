"""A run directory: what training writes and a trained model is read from.

* :mod:`~pgmoe_jax.rundir.workdir`: ``<workdir>/config.json`` and its seal
  (write once validated, read back checked, accept a deliberate edit).
* :mod:`~pgmoe_jax.rundir.checkpoint`: orbax checkpoints of the parameters
  and optimiser state, with checksums
  (:mod:`~pgmoe_jax.rundir.integrity`); read-only for a trained model.

Training writes a run directory and :func:`pgmoe_jax.load_model` reads one;
both import it from here, so using a model needs no training code. The
submodules are imported by name (``from pgmoe_jax.rundir import
checkpoint``): reading ``config.json`` does not load orbax.
"""
