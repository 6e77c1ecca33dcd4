"""A ``model`` section as older versions wrote it, in today's spelling.

``config.json`` files stay as training wrote them (their seal is over the
bytes); :func:`upgrade_model_section` is how they are read. For a
``pgmoe`` section it

* gives a missing field the value it meant while the field did not exist
  (:data:`PGMOE_MISSING`: the model's defaults of those versions, in their
  spelling), and
* turns the old 0-encodings into the current ones:

  ======================================  =================================
  written                                 read as
  ======================================  =================================
  ``coarse=0`` (the full grid)            ``coarse=None``
  ``envelope_iters=0`` (a dense eigh)     ``envelope_solver="eigh"``
  ``envelope_start=0`` (no start grid)    ``envelope_start=None``
  ``envelope_start_iters`` with 0 on      ``envelope_start_exact=True``
  the coarsest level (a dense eigh there)
  an int ``envelope_start_iters=k``       ``[k]`` (one level)
  ======================================  =================================

Each old encoding is invalid in the current rules, so the mapping is
unambiguous, and a section in the current spelling is returned as it is.
Other models' sections are returned unchanged. Pure: no jax, no I/O.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

# Per pgmoe field, the value a config.json without it means (old
# spellings; upgrade_model_section turns them into the current ones). A
# field added to pgmoe_jax.models.PGMoEConfig gets an entry here: the
# behaviour of the versions that did not have it.
PGMOE_MISSING: dict[str, Any] = {
    "tiles": 4,
    "halo": 2,
    "experts": "mlp",
    "expert_hidden": [64, 64],
    "shared_expert": True,
    "embedding_dim": 8,
    "gate": "envelope",
    "coarse": 8,
    "gate_hidden": [64],
    "gate_start_minima": False,
    "potential_scale": 10.0,
    "expert_init_scale": 0.01,
    "envelope_iters": 0,
    "envelope_solver": "lobpcg",
    "envelope_start": 0,
    "envelope_start_iters": 6,
    "envelope_start_exact": False,
    "envelope_sweeps": None,
    "input_clip": 3.0,
    "correction_bound": 5.0,
    "damp_forbidden": True,
}


def _is_zero(value: Any) -> bool:
  """A scalar integer 0 (not False, not a sequence)."""
  return isinstance(value, int) and not isinstance(value, bool) and (
      value == 0)


def upgrade_model_section(section: Mapping[str, Any]) -> dict[str, Any]:
  """A config.json ``model`` section with today's meaning and spelling.

  Args:
    section: the ``model`` section as read from a ``config.json`` (JSON
      values: lists, not tuples), of any version.

  Returns:
    A new dict: for ``name="pgmoe"`` every field present, in the current
    spelling (see the module docstring); other models' sections as they
    are. The argument is not modified.
  """
  section = copy.deepcopy(dict(section))
  if section.get("name") != "pgmoe":
    return section
  out = {**copy.deepcopy(PGMOE_MISSING), **section}
  if _is_zero(out["coarse"]):
    out["coarse"] = None
  if _is_zero(out["envelope_start"]):
    out["envelope_start"] = None
  levels = out["envelope_start_iters"]
  if isinstance(levels, int) and not isinstance(levels, bool):
    out["envelope_start_iters"] = levels = [levels]
  if _is_zero(out["envelope_iters"]) and out["envelope_start"] is None:
    out["envelope_solver"] = "eigh"
  if (out["envelope_start"] is not None and isinstance(levels, list)
      and levels and _is_zero(levels[0])):
    out["envelope_start_exact"] = True
  return out
