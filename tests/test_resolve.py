"""A config resolves once into frozen, typed sections that training reads."""

import dataclasses

import ml_collections
import pytest

from experiments.configs import default as default_config
from experiments.configs import test as test_config
from pgmoe_jax.training import config as config_lib

SECTIONS = {"data": config_lib.DataConfig, "loss": config_lib.LossConfig,
            "optim": config_lib.OptimConfig, "train": config_lib.TrainConfig,
            "mesh": config_lib.MeshConfig}
# Fields of default.py's data section that resolve turns into stream_kwargs.
STREAM_FIELDS = {"ranges", "mixture"}


def resolvable():
  """The test config, trainable without a dataset on disk."""
  config = test_config.get_config()
  config.data.train = "unused"
  return config


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_typed_sections_have_default_py_fields(name):
  """One set of fields: each typed section holds exactly default.py's."""
  default = default_config.get_config()[name]
  fields = {f.name for f in dataclasses.fields(SECTIONS[name])}
  if name == "data":
    fields = fields - {"stream_kwargs"} | STREAM_FIELDS
  assert fields == set(default.keys())


def test_section_defaults_are_default_py_values():
  """The one section with defaults (a config without ``mesh``) agrees with
  default.py."""
  default = default_config.get_config().mesh
  assert dataclasses.asdict(config_lib.MeshConfig()) == default.to_dict()


def test_run_holds_typed_frozen_sections():
  config = resolvable()
  run = config_lib.resolve(config)
  assert run.train.num_steps == config.train.num_steps
  assert run.optim.learning_rate == config.optim.learning_rate
  assert run.loss.mode == config.loss.mode
  assert (run.mesh.data, run.mesh.space) == (-1, 1)
  assert run.seed == config.seed
  with pytest.raises(dataclasses.FrozenInstanceError):
    run.train.num_steps = 1  # pytype: disable=attribute-error
  # A later edit of the ConfigDict does not reach the resolved run.
  config.train.num_steps = 10 * config.train.num_steps
  assert run.train.num_steps != config.train.num_steps
  assert sum(run.memory.values()) > 0
  lr = run.optim.learning_rate
  assert float(run.schedule(run.optim.warmup_steps)) == pytest.approx(lr)


@pytest.mark.parametrize("field, value, message", [
    ("train.num_steps", "100", "train.num_steps must be an integer"),
    ("loss.augment", 1, "loss.augment must be True or False"),
    ("optim.learning_rate", "fast", "optim.learning_rate must be a number"),
    ("train.best_metric", 3, "train.best_metric must be a string"),
])
def test_a_field_of_the_wrong_type_is_named(field, value, message):
  config = resolvable()
  section, name = field.split(".")
  config[section].unlock()
  # A config file may assign any type (only the command line is typed).
  del config[section][name]
  config[section][name] = value
  with pytest.raises(ValueError, match=message):
    config_lib.resolve(config)


def test_unknown_and_missing_fields_are_named():
  config = resolvable()
  config.train.unlock()
  config.train.num_step = 5
  with pytest.raises(ValueError, match="Unknown train field.*num_step"):
    config_lib.resolve(config)
  config = ml_collections.ConfigDict(resolvable().to_dict())
  del config.optim["grad_clip"]
  with pytest.raises(ValueError, match="no optim.grad_clip"):
    config_lib.resolve(config)
  config = resolvable()
  config.data.unlock()
  config.data.stream_kwargs = {}
  with pytest.raises(ValueError, match=r"Unknown data field\(s\) "
                     r"stream_kwargs; valid: train, val, num_train, family, "
                     r"mixture, ranges\."):
    config_lib.resolve(config)
