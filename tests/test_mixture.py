"""Tests for the mixture of potential families and its config and data paths.

Assumes the conftest enables float64. The frequency, sum and offset tests
use components with degenerate ranges, whose every draw is one fixed
potential, so each sample can be told apart exactly; they run many samples
on a tiny grid through one jit each.
"""

import functools
import inspect
import json
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments.configs import universal
from pgmoe_jax import data
from pgmoe_jax import potentials
from pgmoe_jax.grid import Grid
from pgmoe_jax.potentials import mixtures
from pgmoe_jax.training import config as config_lib

GRID = Grid((8, 8), 20.0)

# Components whose every draw is the same potential (degenerate ranges).
FIXED = {
    "harmonic": {"omega": (1.0, 1.0), "centre_fraction": 0.0},
    "box_well": {"depth": (2.0, 2.0), "half_width": (3.0, 3.0),
                 "centre_fraction": 0.0},
    "gaussian_wells": {"num_wells": (1, 1), "depth": (3.0, 3.0),
                       "width": (1.5, 1.5), "centre_fraction": 0.0},
    "woods_saxon": {"depth": (4.0, 4.0), "radius": (2.0, 2.0),
                    "diffuseness": (0.5, 0.5), "centre_fraction": 0.0},
}


def key(seed=0):
  return jax.random.key(seed)


@functools.cache
def _jitted(static):
  return jax.jit(potentials.mixture,
                 static_argnames=("batch_shape", "dtype") + static)


def draw(seed, batch_shape, **kwargs):
  """The mixture through jit; every keyword is static (frozen)."""
  kwargs = {k: potentials.freeze(v) for k, v in kwargs.items()}
  fn = _jitted(tuple(sorted(kwargs)))
  return np.asarray(fn(key(seed), GRID, batch_shape=batch_shape, **kwargs))


def fixed_components(weights):
  return {name: dict(FIXED[name], weight=w) for name, w in weights.items()}


def references():
  return {name: np.asarray(potentials.FAMILIES[name](key(), GRID, **ranges))
          for name, ranges in FIXED.items()}


def which(v, refs):
  """The name of the reference each sample equals (exactly one)."""
  out = []
  for sample in v:
    hits = [n for n, r in refs.items() if np.allclose(sample, r, rtol=0,
                                                      atol=1e-12)]
    assert len(hits) == 1, hits
    out.append(hits[0])
  return np.array(out)


# ---------------------------------------------------------------------------
# The sampler.


def test_universal_covers_every_family():
  families = {spec.get("family", name)
              for name, spec in potentials.UNIVERSAL.items()}
  assert families == set(potentials.FAMILIES)
  assert "mixture" not in potentials.FAMILIES
  assert potentials.get_family("mixture") is potentials.mixture
  assert all(spec["weight"] > 0 for spec in potentials.UNIVERSAL.values())


def universal_config(shape=(16, 16)):
  config = universal.get_config()
  config.grid.shape = shape
  config.loss.unlabelled_batch_size = 4
  return config


@functools.cache
def universal_stream():
  """The universal config's stream, jitted (one compile for the file)."""
  return jax.jit(config_lib.resolve(universal_config()).stream)


# Fast tier: test_potentials::test_determinism_and_jit and
# test_config_streams_the_mixture.
@pytest.mark.slow
def test_determinism_shapes_dtype_and_jit():
  # The universal mixture, as the config streams it (float32, 16x16).
  a = np.asarray(universal_stream()(key(7)))
  b = np.asarray(universal_stream()(key(7)))
  c = np.asarray(universal_stream()(key(8)))
  assert a.shape == (4, 16, 16) and a.dtype == np.float32
  assert np.all(np.isfinite(a))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  assert not np.allclose(a[0], a[1])
  assert draw(7, (3,), components=fixed_components(
      {"harmonic": 1.0})).dtype == np.float64
  # Eager equals jit (a small mixture: eager compiles every op once), and
  # frozen components are hashable, so they can be static under jit.
  small = fixed_components({"harmonic": 1.0, "box_well": 1.0})
  kwargs = dict(components=small, sum_probability=0.5, offset=(-1.0, 1.0))
  eager = np.asarray(potentials.mixture(key(3), GRID, 5, **kwargs))
  np.testing.assert_allclose(draw(3, (5,), **kwargs), eager, rtol=0,
                             atol=1e-12)
  v32 = draw(7, (2, 3), dtype=jnp.float32, **kwargs)
  assert v32.shape == (2, 3, 8, 8) and v32.dtype == np.float32
  # The defaults are the universal mixture.
  defaults = {name: p.default for name, p in inspect.signature(
      potentials.mixture).parameters.items()}
  assert defaults["components"] is potentials.UNIVERSAL
  assert defaults["sum_probability"] == potentials.SUM_PROBABILITY > 0
  assert defaults["offset"] == potentials.OFFSET


def test_components_appear_with_their_weights_and_weight_zero_never():
  weights = {"harmonic": 1.0, "box_well": 2.0, "gaussian_wells": 3.0,
             "woods_saxon": 0.0}
  n = 3000
  v = draw(11, (n,), components=fixed_components(weights),
           sum_probability=0.0, offset=(0.0, 0.0))
  names = which(v, references())
  total = sum(weights.values())
  for name, w in weights.items():
    p = w / total
    freq = np.mean(names == name)
    # Five standard deviations of a binomial frequency (and 0 exactly for
    # a weight of 0).
    assert abs(freq - p) <= 5 * math.sqrt(p * (1 - p) / n), (name, freq, p)
  assert not np.any(names == "woods_saxon")


def test_sums_and_offsets_do_what_they_say():
  refs = references()
  a, b = refs["harmonic"], refs["box_well"]
  sums = {"a": a, "b": b, "a+a": 2 * a, "a+b": a + b, "b+b": 2 * b}
  n = 2000
  v = draw(12, (n,), components=fixed_components({"harmonic": 1.0,
                                                  "box_well": 1.0}),
           sum_probability=0.4, offset=(1.0, 2.0))
  kinds, offsets = [], []
  for sample in v:
    # The one candidate that leaves a constant in [1, 2].
    found = [(k, (sample - s).mean()) for k, s in sums.items()
             if np.ptp(sample - s) < 1e-9]
    assert len(found) == 1
    kinds.append(found[0][0])
    offsets.append(found[0][1])
  kinds, offsets = np.array(kinds), np.array(offsets)
  assert offsets.min() >= 1.0 - 1e-12 and offsets.max() <= 2.0 + 1e-12
  assert offsets.min() < 1.05 and offsets.max() > 1.95  # uniform, spread
  summed = np.isin(kinds, ["a+a", "a+b", "b+b"])
  assert abs(summed.mean() - 0.4) <= 5 * math.sqrt(0.24 / n)
  # Independent picks: the two orders of a + b and the doubles at 1:2:1.
  assert abs(np.mean(kinds[summed] == "a+b") - 0.5) < 0.1
  always = draw(12, (50,), components=fixed_components({"harmonic": 1.0}),
                sum_probability=1.0, offset=(0.0, 0.0))
  np.testing.assert_allclose(always, np.broadcast_to(2 * a, always.shape),
                             rtol=0, atol=1e-12)


def test_without_sums_a_sample_is_the_component_draw_plus_the_offset():
  # The key derivation of the module docstring, with random ranges, for a
  # component whose family is not its name.
  spec = dict(potentials.UNIVERSAL["double_well_symmetric"])
  assert spec["family"] == "double_well"
  v = draw(13, (4,), components={"sym": spec}, sum_probability=0.0,
           offset=(2.5, 2.5))
  _, k_draw = jax.random.split(key(13))
  ranges = {k: x for k, x in spec.items() if k not in ("weight", "family")}
  expected = potentials.double_well(mixtures.component_key(k_draw, "sym"),
                                    GRID, (1, 4), **ranges)[0]
  np.testing.assert_allclose(v, np.asarray(expected) + 2.5, rtol=0,
                             atol=1e-12)
  assert not np.allclose(v[0], v[1])  # random draws, not one potential


@pytest.mark.parametrize("kwargs, names", [
    ({"components": {}}, ["components"]),
    ({"components": {"nosuch": {"weight": 1.0}}}, ["nosuch"]),
    ({"components": {"harmonic": {"weight": 1.0, "family": "nosuch"}}},
     ["harmonic", "nosuch"]),
    ({"components": {"harmonic": {"omega": (1.0, 2.0)}}},
     ["harmonic", "weight"]),
    ({"components": {"harmonic": {"weight": -1.0}}}, ["harmonic", "-1.0"]),
    ({"components": {"harmonic": {"weight": math.nan}}}, ["harmonic"]),
    ({"components": {"harmonic": {"weight": "1"}}}, ["harmonic", "weight"]),
    ({"components": {"harmonic": {"weight": 0.0},
                     "box_well": {"weight": 0.0}}}, ["weight"]),
    ({"components": {"harmonic": {"weight": 1.0, "omgea": (1.0, 2.0)}}},
     ["harmonic", "omgea", "omega"]),
    ({"components": {"harmonic": {"weight": 1.0, "omega": (2.0, 1.0)}}},
     ["harmonic", "omega"]),
    # A component left out (weight 0) still has its ranges checked.
    ({"components": {"harmonic": {"weight": 1.0},
                     "box_well": {"weight": 0.0, "depth": (5.0, 1.0)}}},
     ["box_well", "depth"]),
    ({"components": {"m": {"weight": 1.0, "family": "mixture"}}},
     ["mixture"]),
    ({"sum_probability": 1.5}, ["sum_probability"]),
    ({"sum_probability": (0.1, 0.2)}, ["sum_probability"]),
    ({"offset": (2.0, 1.0)}, ["offset"]),
    ({"offset": 3.0}, ["offset"]),
])
def test_bad_arguments_raise_naming_them(kwargs, names):
  with pytest.raises(ValueError) as info:
    potentials.mixture(key(), GRID, 2, **kwargs)
  for name in names:
    assert name in str(info.value)


def test_frozen_mapping():
  a = potentials.freeze({"b": [1, [2, 3]], "a": {"x": (1.0, 2.0)}})
  assert a == {"a": {"x": [1.0, 2.0]}, "b": (1, (2, 3))}
  assert hash(a) == hash(potentials.freeze(potentials.thaw(a)))
  assert list(a) == ["a", "b"] and isinstance(a["a"], potentials.FrozenMapping)
  assert potentials.thaw(a) == {"a": {"x": [1.0, 2.0]}, "b": [1, [2, 3]]}
  with pytest.raises(TypeError):
    a["c"] = 1  # pylint: disable=unsupported-assignment-operation


# ---------------------------------------------------------------------------
# The config path.


def test_default_config_restates_the_universal_mixture():
  mixture = universal.get_config().data.mixture.to_dict()
  assert potentials.freeze(mixture["components"]) == potentials.UNIVERSAL
  assert mixture["sum_probability"] == potentials.SUM_PROBABILITY
  assert tuple(mixture["offset"]) == potentials.OFFSET
  config = universal.get_config()
  assert config.loss.mode == "label_free" and not config.data.train
  assert config.data.family == "mixture"
  assert config.data.val.endswith("val_mixture")


def test_config_streams_the_mixture():
  config = universal_config()
  v = universal_stream()(key(1))  # = jax.jit(resolve(config).stream)
  assert v.shape == (4, 16, 16) and v.dtype == jnp.float32
  assert np.all(np.isfinite(np.asarray(v)))
  # The config section, from a config.json (lists), gives the same stream
  # arguments, and they are the mixture's.
  ranges = config_lib.stream_ranges(config)
  reloaded = ml_collections.ConfigDict(json.loads(config.to_json()))
  assert config_lib.stream_ranges(reloaded) == ranges
  assert ranges == {"components": potentials.UNIVERSAL,
                    "sum_probability": potentials.SUM_PROBABILITY,
                    "offset": potentials.OFFSET, "stratified": True}
  # A weight set to 0 leaves the component out of the stream.
  config.data.mixture.components.harmonic.weight = 0.0
  config.data.mixture.sum_probability = 0.0
  config.data.mixture.offset = (0.0, 0.0)
  for name in config.data.mixture.components:
    if name != "harmonic":
      config.data.mixture.components[name].weight = 0.0
  with pytest.raises(ValueError, match="every component weight is 0"):
    config_lib.resolve(config)


@pytest.mark.parametrize("edit, names", [
    (lambda c: setattr(c.data.mixture.components, "gausian_wells",
                       ml_collections.ConfigDict({"weight": 1.0})),
     ["data.mixture", "gausian_wells"]),
    (lambda c: setattr(c.data.mixture.components.harmonic, "omgea",
                       (1.0, 2.0)),
     ["data.mixture", "harmonic", "omgea"]),
    (lambda c: setattr(c.data.mixture.components.box_well, "depth",
                       (5.0, 1.0)),
     ["data.mixture", "box_well", "depth"]),
    (lambda c: setattr(c.data.mixture, "sum_probabilty", 0.5),
     ["data.mixture", "sum_probabilty"]),
    (lambda c: setattr(c.data.ranges, "depth", (1.0, 2.0)),
     ["data.ranges", "data.mixture"]),
])
def test_config_typos_are_named(edit, names):
  config = universal_config()
  edit(config)
  with pytest.raises(ValueError) as info:
    config_lib.resolve(config)
  for name in names:
    assert name in str(info.value)


# ---------------------------------------------------------------------------
# Datasets.


def test_dataset_spec_of_the_mixture_round_trips():
  spec = data.DatasetSpec("mixture", GRID, 3, 5, "val_mixture",
                          {"components": fixed_components(
                              {"harmonic": 1.0, "box_well": 2.0}),
                           "offset": [-1.0, 1.0]})
  hash(spec)
  text = json.dumps(spec.to_json())
  back = data.DatasetSpec.from_json(json.loads(text))
  assert back.to_json() == spec.to_json() == json.loads(text)
  assert json.loads(text)["ranges"]["components"]["box_well"]["weight"] == 2
  unchecked = data.DatasetSpec.from_json(json.loads(text), check_family=False)
  assert unchecked.to_json() == spec.to_json()
  # The sampler receives the same (frozen, hashable) arguments.
  assert dict(back.ranges) == spec.resolved_ranges()
  assert dict(unchecked.ranges) == spec.resolved_ranges()
  hash(back), hash(unchecked)  # pylint: disable=expression-not-assigned
  v = data.make_split_sampler(back)(0, 3)
  assert v.shape == (3, 8, 8) and np.all(np.isfinite(v))


def test_family_splits():
  specs = data.family_splits(GRID, 7, seed=3, solver="lobpcg")
  assert set(specs) == ({f"test_{name}" for name in potentials.UNIVERSAL}
                        | {"val_mixture", "test_mixture"})
  assert {s.family for s in specs.values()} == (set(potentials.FAMILIES)
                                                | {"mixture"})
  standard = data.standard_splits("gaussian_wells", GRID, 1, 1)
  assert not set(specs) & set(standard)
  for name, spec in specs.items():
    assert spec.split == name and spec.num_samples == 7 and spec.seed == 3
    assert spec.solver == "lobpcg"
  sym = specs["test_double_well_symmetric"]
  assert sym.family == "double_well"
  assert sym.resolved_ranges()["asymmetry"] == (
      potentials.UNIVERSAL["double_well_symmetric"]["asymmetry"])
  mixture = specs["val_mixture"].resolved_ranges()
  assert mixture["components"] == potentials.UNIVERSAL
  assert dict(specs["val_mixture"].ranges)["offset"] == potentials.OFFSET
  # Other components: a split each, weight 0 included.
  custom = data.family_splits(GRID, 2, components=fixed_components(
      {"harmonic": 1.0, "box_well": 0.0}))
  assert set(custom) == {"test_harmonic", "test_box_well", "val_mixture",
                         "test_mixture"}
  with pytest.raises(ValueError, match="nosuch"):
    data.family_splits(GRID, 2, components={"nosuch": {"weight": 1.0}})


# Fast tier: test_stratified_sums_pair_random_components_and_offsets_apply.
@pytest.mark.slow
def test_stratified_batches_hold_each_component_s_share():
  # Weights 1:2:3 over a batch of 60: exactly 10, 20 and 30 rows, grouped
  # (components sorted by name); over a batch of 64 (R = 1 row left over,
  # 21/32/10 fixed), the left-over row's component follows the weights
  # across batches.
  weights = {"harmonic": 1.0, "box_well": 2.0, "gaussian_wells": 3.0,
             "woods_saxon": 0.0}
  refs = references()
  kwargs = dict(components=fixed_components(weights), sum_probability=0.0,
                offset=(0.0, 0.0), stratified=True)
  names = which(draw(3, (60,), **kwargs), refs)
  counts = {n: int(np.sum(names == n)) for n in weights}
  assert counts == {"harmonic": 10, "box_well": 20, "gaussian_wells": 30,
                    "woods_saxon": 0}
  batches = 100
  v = np.concatenate([draw(seed, (64,), **kwargs) for seed in
                      range(batches)])
  names = which(v, refs).reshape(batches, 64)
  fixed = names[:, :63]
  assert (fixed[:, :21] == "box_well").all()
  assert (fixed[:, 21:53] == "gaussian_wells").all()
  assert (fixed[:, 53:] == "harmonic").all()
  for name, w in weights.items():
    p = w / 6.0
    freq = np.mean(names[:, 63] == name)
    assert abs(freq - p) <= 5 * math.sqrt(p * (1 - p) / batches) + 1e-12, (
        name, freq)
  # A batch of one is the unstratified draw; a (2, 30) batch is the flat
  # batch of 60 reshaped.
  single = dict(kwargs, sum_probability=0.5, offset=(-1.0, 1.0))
  np.testing.assert_array_equal(
      draw(5, (1,), **single), draw(5, (1,), **dict(single,
                                                    stratified=False)))
  np.testing.assert_array_equal(draw(3, (2, 30), **kwargs).reshape(60, 8, 8),
                                draw(3, (60,), **kwargs))


def test_stratified_sums_pair_random_components_and_offsets_apply():
  weights = {"harmonic": 1.0, "box_well": 1.0}
  refs = references()
  n = 400
  v = draw(9, (n,), components=fixed_components(weights),
           sum_probability=0.5, offset=(-2.0, 2.0), stratified=True)
  pairs = {(a, b): refs[a] + refs[b] for a in refs for b in refs if a <= b}
  kinds = []
  for sample in v:
    # The offset is a constant: compare up to it.
    hits = [k for k, r in list(refs.items()) + list(pairs.items())
            if np.allclose(sample - sample.mean(), r - r.mean(), atol=1e-9)]
    assert len(hits) == 1, hits
    kinds.append(hits[0])
  summed = np.array([isinstance(k, tuple) for k in kinds])
  assert abs(summed.mean() - 0.5) < 5 * math.sqrt(0.25 / n)
  # Each row's first term is its stratum (box_well rows first, sorted by
  # name); the second terms are shuffled, so a stratum's sums pair it with
  # both components.
  for rows, name in ((slice(0, 200), "box_well"),
                     (slice(200, 400), "harmonic")):
    alone = {k for k, s in zip(kinds[rows], summed[rows]) if not s}
    assert alone == {name}
    partners = {k for k, s in zip(kinds[rows], summed[rows]) if s}
    assert partners == {tuple(sorted((name, other))) for other in weights}
