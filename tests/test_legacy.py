"""Model sections of older config.json files read with their meaning."""

import dataclasses
import hashlib
import json
import os
import shutil

import pytest

from experiments.configs import default
from experiments.configs import universal
from pgmoe_jax import models
from pgmoe_jax import pretrained
from pgmoe_jax.grid import Grid
from pgmoe_jax.rundir import legacy
from pgmoe_jax.rundir import workdir as workdir_lib

# A pgmoe section as the first releases wrote it: every field that existed
# then, with the values of their default config.
FIRST = dict(name="pgmoe", tiles=4, halo=2, expert_hidden=[64, 64],
             shared_expert=True, embedding_dim=8, gate="envelope", coarse=16,
             gate_hidden=[64], potential_scale=10.0, expert_init_scale=0.01,
             envelope_iters=6, input_clip=3.0, correction_bound=5.0)


def upgrade(**fields):
  return legacy.upgrade_model_section({**FIRST, **fields})


def test_every_model_field_has_a_meaning_when_missing():
  # A new field needs its entry: what a config.json without it means.
  fields = {f.name for f in dataclasses.fields(models.PGMoEConfig)}
  assert set(legacy.PGMOE_MISSING) == fields


@pytest.mark.parametrize("field, meaning", [
    ("experts", {"experts": "mlp"}),
    ("coarse", {"coarse": 8}),
    ("envelope_iters", {"envelope_solver": "eigh"}),
    ("envelope_solver", {"envelope_solver": "lobpcg", "envelope_iters": 6}),
    ("envelope_start", {"envelope_start": None}),
    ("envelope_start_iters", {"envelope_start_iters": [6]}),
    ("envelope_start_exact", {"envelope_start_exact": False}),
    ("damp_forbidden", {"damp_forbidden": True}),
    ("input_clip", {"input_clip": 3.0}),
    ("correction_bound", {"correction_bound": 5.0}),
    ("tiles", {"tiles": 4}),
])
def test_a_missing_field_means_what_it_meant_before_it_existed(field,
                                                               meaning):
  section = dict(FIRST, envelope_solver="fixed", envelope_start=0,
                 envelope_start_iters=[6], experts="mlp", damp_forbidden=True)
  section.pop(field, None)
  upgraded = legacy.upgrade_model_section(section)
  assert {k: upgraded[k] for k in meaning} == meaning
  assert set(upgraded) == set(legacy.PGMOE_MISSING) | {"name"}
  models.build_model(upgraded, Grid((32, 32), 20.0))  # and it builds


@pytest.mark.parametrize("old, new", [
    (dict(coarse=0), dict(coarse=None)),
    (dict(coarse=8), dict(coarse=8)),
    (dict(envelope_iters=0, envelope_solver="lobpcg"),
     dict(envelope_solver="eigh")),
    (dict(envelope_iters=0, envelope_solver="fixed"),
     dict(envelope_solver="eigh")),
    (dict(envelope_iters=4, envelope_solver="fixed"),
     dict(envelope_iters=4, envelope_solver="fixed")),
    (dict(envelope_start=0), dict(envelope_start=None)),
    (dict(envelope_start_iters=6), dict(envelope_start_iters=[6])),
    (dict(coarse=0, envelope_iters=1, envelope_solver="fixed",
          envelope_start=32, envelope_start_iters=[0, 2]),
     dict(coarse=None, envelope_iters=1, envelope_solver="fixed",
          envelope_start=32, envelope_start_iters=[0, 2],
          envelope_start_exact=True)),
    (dict(envelope_iters=2, envelope_solver="fixed", envelope_start=8,
          envelope_start_iters=0),
     dict(envelope_start=8, envelope_start_iters=[0],
          envelope_start_exact=True)),
    (dict(envelope_iters=2, envelope_solver="fixed", envelope_start=8,
          envelope_start_iters=[4, 2]),
     dict(envelope_start=8, envelope_start_iters=[4, 2],
          envelope_start_exact=False)),
])
def test_old_encodings_become_the_new_spellings(old, new):
  upgraded = upgrade(**old)
  assert {k: upgraded[k] for k in new} == new
  # Idempotent: a section in the current spelling is left as it is.
  assert legacy.upgrade_model_section(upgraded) == upgraded


def test_current_sections_and_other_models_are_left_as_they_are():
  section = workdir_lib.config_to_dict(default.get_config())["model"]
  assert legacy.upgrade_model_section(section) == section
  dense = dict(name="dense", hidden=[8], potential_scale=10.0)
  assert legacy.upgrade_model_section(dense) == dense
  # The input is not modified.
  old = dict(FIRST, coarse=0)
  legacy.upgrade_model_section(old)
  assert old == dict(FIRST, coarse=0)


def _copy_shipped(name, tmp_path):
  folder = tmp_path / name
  os.makedirs(folder)
  for file in (workdir_lib.CONFIG_FILE, workdir_lib.CONFIG_SEAL):
    shutil.copy(os.path.join(pretrained.workdir(name), file), folder / file)
  return folder


@pytest.mark.parametrize("name", ["universal_32", "universal_64",
                                  "gaussian3d_32"])
def test_shipped_configs_load_in_the_new_spelling_unchanged_on_disk(
    name, tmp_path):
  path = os.path.join(pretrained.workdir(name), workdir_lib.CONFIG_FILE)
  with open(path, "rb") as f:
    raw = f.read()
  on_disk = json.loads(raw)["model"]
  assert on_disk["coarse"] == 0  # the old spelling of the full grid
  config = workdir_lib.load_config(pretrained.workdir(name))
  assert config.model.coarse is None
  assert config.model.experts == "mlp" and config.model.damp_forbidden
  assert config.model.envelope_solver == on_disk["envelope_solver"]
  assert config.model.envelope_iters == on_disk["envelope_iters"]
  with open(path, "rb") as f:
    assert f.read() == raw  # read, never rewritten: the seal still holds
  seal = os.path.join(pretrained.workdir(name), workdir_lib.CONFIG_SEAL)
  with open(seal) as f:
    assert f.read().strip() == hashlib.sha256(raw).hexdigest()


def test_an_old_workdir_resumes_with_its_model_in_the_new_spelling(tmp_path):
  # universal_32 was trained with experiments/configs/universal.py when it
  # said coarse=0 and had no start or damping fields; today's spelling of
  # the same model compares equal, another model does not.
  folder = _copy_shipped("universal_32", tmp_path)
  with open(folder / workdir_lib.CONFIG_FILE) as f:
    old = json.load(f)
  new = workdir_lib.config_to_dict(universal.get_config())
  assert workdir_lib._differences(  # pylint: disable=protected-access
      {"model": old["model"]}, {"model": new["model"]}) == []
  config = universal.get_config()
  config.model.coarse = 16
  with pytest.raises(ValueError, match=r"model\.coarse: None -> 16"):
    workdir_lib.save_config(config, folder)


def test_an_old_exact_gate_resumes_as_envelope_solver_eigh(tmp_path):
  old = {"model": dict(FIRST, envelope_iters=0)}
  new = {"model": dict(FIRST, envelope_iters=0, envelope_solver="eigh",
                       envelope_start=None,
                       envelope_start_iters=[6], envelope_start_exact=False,
                       experts="mlp", damp_forbidden=True)}
  assert workdir_lib._differences(  # pylint: disable=protected-access
      old, new) == []
  new["model"]["envelope_solver"] = "fixed"
  new["model"]["envelope_iters"] = 4
  assert workdir_lib._differences(  # pylint: disable=protected-access
      old, new) == ["model.envelope_iters: 0 -> 4",
                    "model.envelope_solver: 'eigh' -> 'fixed'"]
