r"""Potential families: pure, jittable samplers of random potentials V(r).

Contract (every family in :data:`FAMILIES` follows it)::

    V = family(key, grid, batch_shape=(), *, <ranges...>, dtype=None)

* ``key`` is a JAX PRNG key (raw ``uint32[2]`` or a typed key); the result is a
  deterministic function of ``key``, ``grid``, ``batch_shape``, the ranges and
  ``dtype``: the same inputs give bitwise the same array.
* ``V`` has shape ``(*batch_shape, *grid.shape)``, values in Hartree, sampled
  on the grid points ``grid.coordinates()`` (bohr). ``batch_shape`` is a tuple
  of non-negative integers; an integer ``k`` means ``(k,)``, as in
  :mod:`jax.random`.
* ``dtype`` is a floating dtype; ``None`` means JAX's default float (float64
  under ``jax_enable_x64``, else float32). All arithmetic is done in ``dtype``
  (``random_smooth`` does its FFT in at least float32). The draws depend on
  ``dtype`` too: the same key gives different samples in float32 and float64.
* Ranges are ``(low, high)`` pairs of Python numbers, sampled uniformly per
  batch member unless a family says otherwise; they are validated eagerly and
  raise ``ValueError`` naming the argument and the bad value. Ranges fix array
  shapes (e.g. the largest number of wells), so they are static: under
  :func:`jax.jit` close over them or list them in ``static_argnames`` together
  with ``batch_shape``; ``grid`` is a static pytree and needs no marking::

      jax.jit(gaussian_wells, static_argnames="batch_shape")(
          key, grid, batch_shape=(8,))

* The functions are pure: no global state, no I/O, and no Python control flow
  that depends on sampled values, so they trace once per static signature.

Six families ship in :mod:`pgmoe_jax.potentials.families` and are listed in
:data:`FAMILIES`; :func:`~pgmoe_jax.potentials.mixtures.mixture` (named
``"mixture"``, in :data:`COMPOSITE_FAMILIES`) draws from a weighted mixture
of them, with sums of two draws and random offsets, over the broad ranges
of :data:`UNIVERSAL` by default. :func:`get_family` looks one up by name,
or imports a user's own family given as ``"package.module:function"`` (any
callable that follows the contract), so users need not edit the package;
every place that takes a family name (``experiments.generate_data
--family``, the config's ``data.family``) goes through it. :func:`sample`
does the look-up and the call in one step; :func:`make_sampler` and
:func:`make_potential_stream` turn a family into jitted per-key samplers
and the endless unlabelled stream of label-free training.

Every call of a family goes through :func:`call_family`: when a user
family raises (an error of its own, or JAX's error for Python control flow
on traced values), the error becomes one :class:`FamilyError` line naming
the family, the original error and the contract above.
"""


from __future__ import annotations

import importlib
import inspect
import re
import types
from typing import Any, Callable, Mapping, Protocol, Sequence

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike
import numpy as np

from pgmoe_jax.grid import Grid
from pgmoe_jax.memory import InsufficientMemoryError
from pgmoe_jax.potentials._args import FrozenMapping
from pgmoe_jax.potentials._args import freeze
from pgmoe_jax.potentials._args import thaw
from pgmoe_jax.potentials.families import box_well
from pgmoe_jax.potentials.families import double_well
from pgmoe_jax.potentials.families import gaussian_wells
from pgmoe_jax.potentials.families import harmonic
from pgmoe_jax.potentials.families import random_smooth
from pgmoe_jax.potentials.families import woods_saxon
from pgmoe_jax.potentials.mixtures import OFFSET
from pgmoe_jax.potentials.mixtures import SUM_PROBABILITY
from pgmoe_jax.potentials.mixtures import UNIVERSAL
from pgmoe_jax.potentials.mixtures import mixture

__all__ = [
    "COMPOSITE_FAMILIES",
    "FAMILIES",
    "FAMILY_CONTRACT",
    "FamilyError",
    "FrozenMapping",
    "OFFSET",
    "PotentialFamily",
    "SUM_PROBABILITY",
    "UNIVERSAL",
    "box_well",
    "call_family",
    "double_well",
    "freeze",
    "gaussian_wells",
    "get_family",
    "harmonic",
    "make_potential_stream",
    "make_sampler",
    "mixture",
    "random_smooth",
    "range_names",
    "sample",
    "thaw",
    "woods_saxon",
]


class PotentialFamily(Protocol):
  """The call contract shared by every potential family.

  Families also take their own keyword-only ``(low, high)`` ranges (see each
  function); those all have defaults, so any family can be called as below.
  """

  def __call__(self, key: jax.Array, grid: Grid,
               batch_shape: int | Sequence[int] = (), *,
               dtype: DTypeLike | None = None) -> jax.Array:
    """Samples potentials.

    Args:
      key: a JAX PRNG key.
      grid: the grid the potentials are sampled on.
      batch_shape: leading batch shape; an int ``k`` means ``(k,)``.
      dtype: floating dtype of the result; ``None`` for JAX's default float.

    Returns:
      V of shape ``(*batch_shape, *grid.shape)`` in Hartree.
    """
    ...


FAMILIES: Mapping[str, PotentialFamily] = types.MappingProxyType({
    "box_well": box_well,
    "double_well": double_well,
    "gaussian_wells": gaussian_wells,
    "harmonic": harmonic,
    "random_smooth": random_smooth,
    "woods_saxon": woods_saxon,
})

# Families built from the others (not components of a mixture themselves).
COMPOSITE_FAMILIES: Mapping[str, PotentialFamily] = types.MappingProxyType({
    "mixture": mixture,
})


FAMILY_CONTRACT = (
    "a family must be pure and jittable, with no Python control flow on "
    "sampled values (no float(), int(), bool(), if or while on traced "
    "arrays), take a dtype= keyword and return a floating array of shape "
    "batch_shape + grid.shape")

# JAX's errors for a function that needs concrete values while traced.
_NOT_JITTABLE = (jax.errors.ConcretizationTypeError,
                 jax.errors.TracerArrayConversionError,
                 jax.errors.TracerIntegerConversionError,
                 jax.errors.UnexpectedTracerError)


class FamilyError(ValueError):
  """A user's potential family failed when called: it breaks the contract."""


def _one_line(err: BaseException) -> str:
  """``Type: first line``, plus the call JAX blames for a traced value."""
  text = str(err).strip()
  summary = text.splitlines()[0].strip() if text else ""
  arose = re.search(r"The problem arose with the `[^`\n]*` function\.",
                    text)
  if arose and arose.group(0) not in summary:
    end = "" if summary.endswith((".", ":", ";")) else "."
    summary = f"{summary}{end} {arose.group(0)}"
  return f"{type(err).__name__}: {summary}" if summary else (
      type(err).__name__)


def call_family(name: str, family: Callable, *args: Any,
                **kwargs: Any) -> jax.Array:
  """Calls ``family(*args, **kwargs)``; a user family's failure is one line.

  For a user family (``name`` is ``"package.module:function"``) any
  exception, raised eagerly or while the call is traced, becomes a
  :class:`FamilyError` naming the family, the original error (its type and
  first line; it is chained as the cause) and :data:`FAMILY_CONTRACT`. A
  shipped family's errors (range checks) pass unchanged, and so does a
  memory estimate that does not fit.

  Raises:
    FamilyError: the user family raised.
  """
  if not (isinstance(name, str) and ":" in name):
    return family(*args, **kwargs)
  try:
    return family(*args, **kwargs)
  except (FamilyError, InsufficientMemoryError):
    raise
  except Exception as err:  # pylint: disable=broad-except
    what = ("is not jittable" if isinstance(err, _NOT_JITTABLE)
            else "raised an error")
    raise FamilyError(f"Potential family {name!r} {what} ({_one_line(err)}); "
                      f"{FAMILY_CONTRACT}.") from err


def _import_family(name: str) -> PotentialFamily:
  module_name, _, attr = name.partition(":")
  if not module_name or not attr:
    raise ValueError(f"Potential family {name!r}: a user family is named "
                     "'package.module:function'.")
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise ValueError(f"Potential family {name!r}: cannot import module "
                     f"{module_name!r} ({e}); is it on PYTHONPATH?") from None
  family = getattr(module, attr, None)
  if family is None or not callable(family):
    raise ValueError(f"Potential family {name!r}: module {module_name!r} has "
                     f"no function {attr!r}.")
  return family


def get_family(name: str) -> PotentialFamily:
  """Looks up a potential family by name.

  Args:
    name: a key of :data:`FAMILIES`, e.g. ``"gaussian_wells"``, or of
      :data:`COMPOSITE_FAMILIES` (``"mixture"``), or a user family
      ``"package.module:function"`` following the module's contract.

  Returns:
    The family function.

  Raises:
    ValueError: for an unknown name (the message lists the known names), or
      a user family that cannot be imported.
  """
  if isinstance(name, str) and ":" in name:
    return _import_family(name)
  if isinstance(name, str) and name in COMPOSITE_FAMILIES:
    return COMPOSITE_FAMILIES[name]
  if not isinstance(name, str) or name not in FAMILIES:
    raise ValueError(
        f"Unknown potential family {name!r}; known families: "
        f"{', '.join(sorted(FAMILIES))}, the mixture of them "
        f"{', '.join(map(repr, sorted(COMPOSITE_FAMILIES)))}, or a user "
        "family given as 'package.module:function'.")
  return FAMILIES[name]


def range_names(family: Callable) -> list[str]:
  """The keyword-only arguments of a family other than ``dtype``."""
  return sorted(p.name for p in inspect.signature(family).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY and
                p.name != "dtype")


def check_output(name: str, family: Callable, grid: Grid,
                 **ranges: Any) -> None:
  """Traces one sample abstractly and checks the contract's shape and dtype.

  The family's eager range validation runs; no numbers are computed. The
  family is called with ``dtype=None`` unless ``ranges`` holds a dtype.

  Raises:
    ValueError: the family rejects the ranges, or returns something other
      than a floating array of shape ``grid.shape`` (or ``(k, *grid.shape)``
      for ``batch_shape=(k,)``).
    FamilyError: (a ValueError) a user family raised or cannot be traced
      (:func:`call_family`).
  """
  ranges = {"dtype": None, **ranges}
  for batch in ((), (2,)):
    out = jax.eval_shape(
        lambda key, b=batch: call_family(name, family, key, grid, b,
                                         **ranges), jax.random.key(0))
    want = batch + grid.shape
    if (not hasattr(out, "shape") or tuple(out.shape) != want
        or not jnp.issubdtype(out.dtype, jnp.floating)):
      raise ValueError(
          f"Potential family {name!r} returned "
          f"{getattr(out, 'shape', type(out).__name__)} "
          f"{getattr(out, 'dtype', '')} for batch_shape={batch} on {grid}; "
          f"a family must return a floating array of shape {want}.")


def sample(name: str, key: jax.Array, grid: Grid,
           batch_shape: int | Sequence[int] = (), **ranges: Any) -> jax.Array:
  """Samples potentials from the family called ``name``.

  Args:
    name: a key of :data:`FAMILIES` or ``"package.module:function"``.
    key: a JAX PRNG key.
    grid: the grid.
    batch_shape: leading batch shape; an int ``k`` means ``(k,)``.
    **ranges: the family's keyword arguments (its ranges and ``dtype``).

  Returns:
    V of shape ``(*batch_shape, *grid.shape)`` in Hartree.

  Raises:
    ValueError: for an unknown family name, or as a shipped family raises.
    TypeError: for a keyword the family does not take (the message names it
      and lists the valid ones), or as a shipped family raises.
    FamilyError: (a ValueError) a user family raised (:func:`call_family`).
  """
  family = get_family(name)
  valid = range_names(family) + ["dtype"]
  unknown = sorted(set(ranges) - set(valid))
  if unknown:
    raise TypeError(
        f"Potential family {name!r} got unknown keyword argument(s) "
        f"{', '.join(map(repr, unknown))}; valid keywords: "
        f"{', '.join(sorted(valid))}.")
  return call_family(name, family, key, grid, batch_shape, **ranges)


def make_sampler(family: str, grid: Grid, dtype: DTypeLike | None = None,
                 **ranges) -> Callable[[jax.Array], jax.Array]:
  """Returns a jitted ``sample(keys) -> V`` drawing one potential per key.

  ``keys`` has shape ``(b,)``; ``V`` is ``(b, *grid.shape)``. Sample ``i``
  depends only on ``keys[i]``, so datasets do not depend on batch sizes. A
  user family that fails raises :class:`FamilyError` on the first call.
  """
  fn = get_family(family)

  @jax.jit
  def sample_keys(keys):
    return jax.vmap(lambda k: call_family(family, fn, k, grid, (),
                                          dtype=dtype, **ranges))(keys)

  return sample_keys


def make_potential_stream(family: str, grid: Grid, batch_size: int, *,
                          dtype: DTypeLike = jnp.float32,
                          **ranges) -> Callable[[jax.Array], jax.Array]:
  """An endless source of unlabelled potentials, for energy-only training.

  Returns a pure ``sample(key) -> V (batch_size, *grid.shape)`` that can be
  called inside a jitted train step with a per-step key
  (``jax.random.fold_in(key, step)``): no solver, no I/O, no host round trip.

  Raises:
    ValueError: an unknown family, bad ranges, a family that breaks the
      contract (:class:`FamilyError` for a user family that raises or
      cannot be traced), or a batch size below 1.
  """
  fn = get_family(family)
  if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive integer, got "
                     f"{batch_size!r}.")
  check_output(family, fn, grid, dtype=dtype, **ranges)

  def sample_stream(key):
    return call_family(family, fn, key, grid, (batch_size,), dtype=dtype,
                       **ranges)

  return sample_stream
