"""Every experiment config loads, locks, validates and builds its model."""

import ast
import dataclasses
import glob
import importlib
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from pgmoe_jax import models
from pgmoe_jax import potentials
from pgmoe_jax.evaluation.front import cascade_settings
from pgmoe_jax.variational import normalize_unchecked
from pgmoe_jax.workflows.front import cascade_fn
from pgmoe_jax.training import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = sorted(os.path.basename(p)[:-3] for p in glob.glob(
    os.path.join(ROOT, "experiments", "configs", "*.py"))
               if not p.endswith("__init__.py"))


def load(name):
  return importlib.import_module(f"experiments.configs.{name}").get_config()


def leaves(config, prefix=""):
  """Dotted paths of every field; an empty section counts as a field."""
  out = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict) and len(value):
      out.update(leaves(value, f"{prefix}{key}."))
    else:
      out[prefix + key] = value
  return out


def field_types(config, prefix=""):
  """Dotted paths of every field -> the type the locked config accepts."""
  out = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict) and len(value):
      out.update(field_types(value, f"{prefix}{key}."))
    else:
      out[prefix + key] = config.get_type(key)
  return out


def test_the_expected_configs_exist():
  assert {"default", "pgmoe", "dense", "test"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_config_loads_locks_validates_and_builds(name):
  config = load(name)
  config.lock()
  with pytest.raises(AttributeError):
    config.model.no_such_field = 1
  run = config_lib.resolve(config)
  grid, model = run.grid, run.model
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((2,) + grid.shape, jnp.float32))
  assert models.count_params(shapes["params"]) > 0


@pytest.mark.parametrize("name", NAMES)
def test_config_fields_are_defined_in_default(name):
  default = leaves(load("default"))
  config = leaves(load(name))
  extra = {k for k in config if k not in default and
           not (k.startswith("model.") and config["model.name"] != "pgmoe")}
  assert not extra, f"{name} sets fields default.py does not define: {extra}"
  types = field_types(load("default"))
  for key, value in config.items():
    if key in default:  # the same type, or the locked config would refuse it
      # None only where default.py types the field (a FieldReference), so
      # that the command line can still set it.
      assert isinstance(value, types[key]) or (
          value is None and types[key] is not type(None)), key


def test_default_model_section_is_pgmoe_config_defaults():
  # PGMoEConfig's defaults and default.py's model section are one set.
  section = dict(load("default").model)
  assert section.pop("name") == "pgmoe"
  expected = dataclasses.asdict(models.PGMoEConfig())
  assert set(section) == set(expected)
  for field, value in expected.items():
    assert section[field] == value, field


def test_default_comments_every_field():
  """Each field's assignment in default.py has a comment on or above it."""
  path = os.path.join(ROOT, "experiments", "configs", "default.py")
  with open(path) as f:
    source = f.read()
  lines = source.splitlines()
  documented = set()
  for node in ast.walk(ast.parse(source)):
    if not isinstance(node, ast.Assign):
      continue
    for target in node.targets:
      if isinstance(target, ast.Attribute):
        line = lines[node.lineno - 1]
        above = lines[node.lineno - 2].strip()
        if "#" in line or above.startswith("#"):
          documented.add(target.attr)
  missing = {k for k in leaves(load("default"))
             if k.split(".")[-1] not in documented}
  assert not missing, f"default.py fields without a comment: {missing}"


def test_dense_takes_only_dense_fields():
  config = load("dense")
  assert set(config.model) == {"name", "hidden", "potential_scale"}


@pytest.mark.parametrize("name, setting", [
    ("quickstart", ((1, 0, 0), (0, 4, 8))),
    ("learned_cascade3d", ((1, 1, 0), (0, 4, 8)))])
def test_an_untrained_learned_cascade_is_a_front_setting(name, setting):
  # make demo's model is the cascade (1,0,0) with sweeps (0,4,8) of the
  # front benchmark's grid with two parts learned (the 3-D one (1,1,0));
  # untrained (the start network's last layer zero, the sweep steps
  # Chebyshev's) it is that setting, so its trained speed-up is against a
  # setting it started as.
  run = config_lib.resolve(load(name))
  grid, model = run.grid, run.model
  assert setting in {(tuple(s.iters), tuple(s.sweeps or ()))
                     for s in cascade_settings(grid)}
  v = potentials.sample("gaussian_wells", jax.random.key(3), grid, 4,
                        dtype=jnp.float32)
  variables = jax.jit(model.init)(jax.random.key(0), v)
  out = jax.jit(model.apply)(variables, v)
  plain = normalize_unchecked(jnp.abs(cascade_fn(grid, *setting)(v)), grid)
  np.testing.assert_allclose(out, plain, rtol=0, atol=1e-5)
  assert set(variables["params"]) == {"gate", "gate_start"}
