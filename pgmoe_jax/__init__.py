"""pgmoe_jax: Physics-Guided Mixture-of-Experts for Schrodinger ground states.

The public surface (DESIGN.md)::

    from pgmoe_jax import Grid, apply_hamiltonian, energy, ground_state
    Hpsi = apply_hamiltonian(psi, V, grid)   # matrix-free stencil
    E = energy(psi, V, grid)                 # Rayleigh quotient
    E0, psi0 = ground_state(V, grid)         # reference solver
    model = load_model(workdir)              # .predict(V) -> psi, .grid,
                                             # .num_params

Importing the package does no I/O and changes no global JAX setting.
"""

from pgmoe_jax.energy import energy
from pgmoe_jax.energy import normalize
from pgmoe_jax.energy import residual
from pgmoe_jax.grid import Grid
from pgmoe_jax.hamiltonian import apply_hamiltonian
from pgmoe_jax.inference import load_model
from pgmoe_jax.metrics import fidelity
from pgmoe_jax.metrics import infidelity
from pgmoe_jax.solvers import ground_state
from pgmoe_jax.solvers import solve

__version__ = "0.1.0"

__all__ = [
    "Grid",
    "apply_hamiltonian",
    "energy",
    "fidelity",
    "ground_state",
    "infidelity",
    "load_model",
    "normalize",
    "residual",
    "solve",
]
