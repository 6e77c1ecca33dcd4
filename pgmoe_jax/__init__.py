"""pgmoe_jax: Physics-Guided Mixture-of-Experts for Schrodinger ground states.

The public surface::

    from pgmoe_jax import Grid, apply_hamiltonian, energy, ground_state
    Hpsi = apply_hamiltonian(psi, V, grid)   # matrix-free stencil
    E = energy(psi, V, grid)                 # Rayleigh quotient
    E0, psi0 = ground_state(V, grid)         # reference solver
    model = load_model(workdir)              # .predict(V) -> psi, .grid,
                                             # .num_params
    model = load_pretrained("universal_32")  # a model shipped with the
                                             # package (pretrained.available())

Importing the package loads only the physics core (grid, stencil, energy
functional, metrics: JAX and NumPy). Everything else loads on first use:
the solvers (SciPy) with ``solve`` / ``ground_state``, ``load_model`` with
flax and orbax, and the subpackages ``data``, ``potentials``, ``models``,
``evaluation``, ``rundir``, ``training``, ``inference`` and ``workflows`` as
attributes.
Importing does no I/O and changes no global JAX setting.
"""

import importlib

from pgmoe_jax.grid import Grid
from pgmoe_jax.hamiltonian import apply_hamiltonian
from pgmoe_jax.metrics import fidelity
from pgmoe_jax.metrics import infidelity
from pgmoe_jax.variational import energy
from pgmoe_jax.variational import normalize
from pgmoe_jax.variational import residual
from pgmoe_jax.version import __version__  # noqa: F401

_LAZY = {
    "ground_state": "pgmoe_jax.solvers",
    "solve": "pgmoe_jax.solvers",
    "load_model": "pgmoe_jax.inference",
    "load_pretrained": "pgmoe_jax.pretrained",
}
_SUBMODULES = ("batching", "bounds", "checks", "data", "evaluation", "grid",
               "hamiltonian", "inference", "kinetic", "locks", "memory",
               "metrics", "models", "paths", "potentials", "pretrained",
               "rundir", "sharding", "solvers", "symmetry", "timing",
               "training", "variational", "workflows")

__all__ = [
    "Grid",
    "apply_hamiltonian",
    "energy",
    "fidelity",
    "ground_state",
    "infidelity",
    "load_model",
    "load_pretrained",
    "normalize",
    "residual",
    "solve",
]


def __getattr__(name):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  if name in _SUBMODULES:
    return importlib.import_module(f"{__name__}.{name}")
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
  return sorted(set(__all__) | set(_SUBMODULES) | {"__version__"})
