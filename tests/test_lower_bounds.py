"""The lower-bound tier pins exactly the lower bounds that setup.cfg declares.

``make test-lower`` installs the package with ``.ci/lower-bounds.txt`` as
pip constraints; this keeps that file and setup.cfg's ``>=`` bounds equal,
so the declared bounds are the tested ones.
"""

import configparser
import os

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def declared_bounds():
  """{name: version} of every >= bound in install_requires and the extras."""
  cfg = configparser.ConfigParser()
  cfg.read(os.path.join(ROOT, "setup.cfg"))
  lines = cfg["options"]["install_requires"].splitlines()
  for extra in cfg["options.extras_require"].values():
    lines += extra.splitlines()
  bounds = {}
  for line in filter(None, (x.strip() for x in lines)):
    req = Requirement(line)
    (spec,) = req.specifier  # one bound each
    assert spec.operator == ">=", line
    name = canonicalize_name(req.name)
    # A package named in several extras has one bound.
    assert bounds.setdefault(name, Version(spec.version)) == Version(
        spec.version), line
  return bounds


def pinned_versions():
  """{name: version} of the constraints file's ``name==version`` lines."""
  pins = {}
  with open(os.path.join(ROOT, ".ci", "lower-bounds.txt")) as f:
    for line in f:
      line = line.split("#")[0].strip()
      if line:
        name, sep, version = line.partition("==")
        assert sep and name.strip() not in pins, line
        pins[canonicalize_name(name.strip())] = Version(version.strip())
  return pins


def test_constraints_pin_exactly_the_declared_lower_bounds():
  declared = declared_bounds()
  assert {"jax", "flax", "numpy", "etils", "pytest"} <= set(declared)
  assert pinned_versions() == declared
