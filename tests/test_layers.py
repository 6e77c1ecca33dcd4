"""The package is layered: every import points down, and the core is light.

Layers, bottom to top (a module may import its own layer and those below):

  0 core        grid, checks, hamiltonian, kinetic, variational, metrics,
                symmetry, timing, locks, memory, sharding, paths, version,
                batching
                (and the package __init__)
  1 solvers     the SciPy reference and the JAX LOBPCG
  2 potentials  families, samplers, the unlabelled stream
  3 data        spec, generation, reading
  4 models      gates, experts, tiling, PG-MoE, dense
  5 evaluation  the one scorer (training uses it) and reports
  6 rundir      a run directory: sealed config.json, checkpoints (what
                training writes and inference reads)
  7 training    config, losses, step, loop, summaries
  8 inference   load_model; pretrained (the shipped models)
  9 workflows   end-to-end jobs behind experiments/
"""

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "pgmoe_jax")
CORE = ("grid", "checks", "hamiltonian", "kinetic", "variational", "metrics",
        "multigrid", "batching",
        "symmetry", "timing", "locks", "memory", "sharding", "paths",
        "version", "bounds")
LAYERS = ("core", "solvers", "potentials", "data", "models", "evaluation",
          "rundir", "training", "inference", "workflows")
# Names the package __init__ exports lazily, and where they live.
LAZY_NAMES = {"ground_state": "solvers", "solve": "solvers",
              "load_model": "inference", "load_pretrained": "pretrained"}
# Packages that sit on another's layer.
SAME_LAYER = {"pretrained": "inference"}
HEAVY = ("optax", "orbax", "matplotlib", "flax", "scipy", "tensorboardX")


def layer_of(module: str) -> int:
  """``pgmoe_jax.a.b`` -> the index of its layer in LAYERS."""
  parts = module.split(".")
  if len(parts) == 1 or parts[1] in CORE:
    return 0
  return LAYERS.index(SAME_LAYER.get(parts[1], parts[1]))


def library_modules():
  for directory, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(directory, name)
        rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        yield rel.removesuffix(".__init__"), path


def imported_modules(path: str) -> set[str]:
  """Every pgmoe_jax module a file imports, anywhere in it."""
  tree = ast.parse(open(path).read())
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out |= {a.name for a in node.names if a.name.startswith("pgmoe_jax")}
    elif isinstance(node, ast.ImportFrom) and node.module and (
        node.module.startswith("pgmoe_jax")):
      for alias in node.names:
        candidate = f"{node.module}.{alias.name}"
        if os.path.exists(os.path.join(ROOT, *candidate.split("."))) or (
            os.path.exists(os.path.join(ROOT, *candidate.split(".")) + ".py")):
          out.add(candidate)
        elif node.module == "pgmoe_jax" and alias.name in LAZY_NAMES:
          out.add(f"pgmoe_jax.{LAZY_NAMES[alias.name]}")
        else:
          out.add(node.module)
  return out


def test_every_import_points_down():
  modules = dict(library_modules())
  assert len(modules) > 30
  upward = []
  for module, path in modules.items():
    for imported in imported_modules(path):
      if layer_of(imported) > layer_of(module):
        upward.append(f"{module} ({LAYERS[layer_of(module)]}) imports "
                      f"{imported} ({LAYERS[layer_of(imported)]})")
  assert not upward, "\n".join(upward)


def test_no_library_module_imports_experiments():
  for module, path in library_modules():
    source = open(path).read()
    assert "import experiments" not in source and (
        "from experiments" not in source), module


def loaded_after(statement: str) -> tuple[set[str], set[str]]:
  """(pgmoe_jax modules, heavy packages) loaded by ``statement``, fresh."""
  code = (f"import sys\n{statement}\n"
          "print(' '.join(sorted(m for m in sys.modules "
          "if m.startswith('pgmoe_jax'))))\n"
          f"print(' '.join(p for p in {HEAVY!r} if p in sys.modules))\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                       capture_output=True, text=True, timeout=120,
                       check=False,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert out.returncode == 0, out.stderr[-2000:]
  ours, heavy = (line.split() for line in out.stdout.splitlines()[-2:]) if (
      len(out.stdout.splitlines()) >= 2) else ([], [])
  return set(ours), set(heavy)


@pytest.mark.parametrize("statement, top_layer, forbidden", [
    # Fast tier: the package, the models and load_model (each a fresh
    # interpreter importing JAX); the other statements in the slow tier.
    ("import pgmoe_jax", "core", set(HEAVY)),
    pytest.param("from pgmoe_jax import Grid", "core", set(HEAVY),
                 marks=pytest.mark.slow),
    pytest.param("import pgmoe_jax.solvers", "solvers",
                 {"optax", "orbax", "matplotlib", "flax", "tensorboardX"},
                 marks=pytest.mark.slow),
    pytest.param("import pgmoe_jax.data", "data",
                 {"optax", "orbax", "matplotlib", "flax", "tensorboardX"},
                 marks=pytest.mark.slow),
    ("import pgmoe_jax.models", "models",
     {"optax", "orbax", "matplotlib", "tensorboardX"}),
    pytest.param("import pgmoe_jax.evaluation", "evaluation",
                 {"optax", "orbax", "matplotlib", "tensorboardX"},
                 marks=pytest.mark.slow),
    pytest.param("from pgmoe_jax.models import resolve", "models",
                 {"optax", "orbax", "matplotlib", "tensorboardX"},
                 marks=pytest.mark.slow),
    pytest.param("from pgmoe_jax.rundir import workdir", "rundir",
                 {"optax", "orbax", "matplotlib", "flax", "tensorboardX"},
                 marks=pytest.mark.slow),
    pytest.param("from pgmoe_jax.rundir import checkpoint", "rundir",
                 {"optax", "matplotlib", "flax", "tensorboardX"},
                 marks=pytest.mark.slow),
    pytest.param("import pgmoe_jax.inference", "inference",
                 {"optax", "matplotlib", "tensorboardX"},
                 marks=pytest.mark.slow),
    ("from pgmoe_jax import load_model", "inference",
     {"optax", "matplotlib", "tensorboardX"}),
    pytest.param("from pgmoe_jax import load_pretrained", "inference",
                 {"optax", "matplotlib", "tensorboardX"},
                 marks=pytest.mark.slow),
    pytest.param("import pgmoe_jax.bounds", "core", set(HEAVY),
                 marks=pytest.mark.slow),
])
def test_each_layer_loads_only_what_is_below_it(statement, top_layer,
                                                forbidden):
  ours, heavy = loaded_after(statement)
  top = LAYERS.index(top_layer)
  above = sorted(m for m in ours if layer_of(m) > top)
  assert not above, f"{statement} loaded {above}"
  assert not heavy & forbidden, f"{statement} loaded {heavy & forbidden}"


def test_inference_imports_nothing_from_training():
  # Reading a run directory (config.json, checkpoints, the model a config
  # names) lives below training, so using a model never needs training.
  modules = dict(library_modules())
  users = {m: p for m, p in modules.items()
           if layer_of(m) == LAYERS.index("inference")}
  assert "pgmoe_jax.inference" in users
  found = sorted(f"{m} imports {i}" for m, p in users.items()
                 for i in imported_modules(p)
                 if i == "pgmoe_jax.training"
                 or i.startswith("pgmoe_jax.training."))
  assert not found, "\n".join(found)


def test_inference_does_not_load_training():
  ours, heavy = loaded_after("from pgmoe_jax import inference")
  assert not {m for m in ours if m.startswith("pgmoe_jax.training")}, ours
  assert "optax" not in heavy


def test_module_names_do_not_shadow_public_functions():
  import pgmoe_jax  # pylint: disable=g-import-not-at-top
  modules = {name for name, _ in library_modules()}
  for name in pgmoe_jax.__all__:
    assert f"pgmoe_jax.{name}" not in modules, name
  # `import pgmoe_jax.variational as m` is the module, and the package's
  # `energy` is the function.
  import pgmoe_jax.variational as m  # pylint: disable=g-import-not-at-top
  assert m.__name__ == "pgmoe_jax.variational"
  assert callable(pgmoe_jax.energy) and pgmoe_jax.energy is m.energy


def test_no_library_module_is_over_500_lines():
  long = {module: n for module, path in library_modules()
          if (n := len(open(path).readlines())) > 500}
  assert not long, long
