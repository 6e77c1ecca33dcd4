"""Datasets: reproducible bytes, resumable writes, validation, loading."""

import json
import os
import pathlib

import jax
import numpy as np
import pytest

from helpers import four_cpu_devices_env
from helpers import import_script
from pgmoe_jax import Grid
from pgmoe_jax import apply_hamiltonian
from pgmoe_jax import data
from pgmoe_jax import potentials

GRID = Grid((16, 16), 20.0)


def spec(**kwargs):
  defaults = dict(family="gaussian_wells", grid=GRID, num_samples=20,
                  shard_size=8)
  defaults.update(kwargs)
  return data.DatasetSpec(**defaults)


def read_all(path):
  """The dataset's bytes (not the lock file, which names its last holder)."""
  return {name: open(os.path.join(path, name), "rb").read()
          for name in sorted(os.listdir(path)) if name != ".lock"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("ref") / "train")
  data.generate(path, spec())
  return path


def test_dataset_contents_are_valid_ground_states(reference):
  ds = data.open_dataset(reference)
  assert len(ds) == 20 and ds.grid == GRID
  assert ds.potentials.shape == (20, 16, 16) and ds.E1.shape == (20,)
  assert len(ds.meta["shards"]) == 3  # 8 + 8 + 4
  v, psi, e0 = (np.asarray(a) for a in (ds.potentials, ds.psi0, ds.E0))
  h_psi = np.asarray(apply_hamiltonian(psi, v, GRID))
  residual = np.linalg.norm((h_psi - e0[:, None, None] * psi).reshape(20, -1),
                            axis=1) / np.linalg.norm(psi.reshape(20, -1),
                                                     axis=1)
  assert (residual <= ds.spec.tol).all()
  np.testing.assert_allclose(residual, ds.residual[:], atol=1e-12)
  np.testing.assert_allclose((psi**2).sum((1, 2)) * GRID.volume_element, 1.0,
                             rtol=1e-12)
  assert (psi.reshape(20, -1).min(1) > -1e-8).all()  # nodeless
  assert (np.asarray(ds.E1) > e0).all()
  np.testing.assert_array_equal(np.asarray(ds.index), np.arange(20))


def test_same_spec_gives_identical_bytes(reference, tmp_path):
  path = str(tmp_path / "train")
  data.generate(path, spec(), workers=2)  # worker count does not matter
  assert read_all(path) == read_all(reference)


def test_interrupted_generation_resumes_to_identical_bytes(reference,
                                                           tmp_path):
  path = str(tmp_path / "train")
  meta = data.generate(path, spec(), max_shards=1)
  assert not meta["complete"] and len(meta["shards"]) == 1
  with pytest.raises(ValueError, match=r"incomplete \(1 of 3 shards\); "
                     "rerun"):
    data.open_dataset(path)
  # A leftover temporary file, as a kill mid-write leaves, is harmless.
  open(os.path.join(path, "shard-00001.psi0.npy.tmp"), "wb").write(b"x")
  calls = []
  meta = data.generate(path, spec(), progress=lambda *a: calls.append(a))
  assert meta["complete"]
  assert calls[0] == (8, 20) and calls[-1] == (20, 20)
  assert read_all(path) == read_all(reference)
  # A complete dataset is left as it is.
  before = os.stat(os.path.join(path, "meta.json")).st_mtime_ns
  data.generate(path, spec())
  assert os.stat(os.path.join(path, "meta.json")).st_mtime_ns == before


def test_data_do_not_depend_on_shard_size(reference, tmp_path):
  path = str(tmp_path / "train")
  data.generate(path, spec(shard_size=5))
  a, b = data.open_dataset(path), data.open_dataset(reference)
  np.testing.assert_array_equal(np.asarray(a.potentials),
                                np.asarray(b.potentials))
  np.testing.assert_array_equal(np.asarray(a.psi0), np.asarray(b.psi0))


def test_corrupt_and_truncated_shards_are_named(reference, tmp_path):
  path = str(tmp_path / "copy")
  os.makedirs(path)
  for name, content in read_all(reference).items():
    open(os.path.join(path, name), "wb").write(content)
  target = os.path.join(path, "shard-00001.psi0.npy")
  raw = bytearray(open(target, "rb").read())
  raw[len(raw) // 2] ^= 0x01
  open(target, "wb").write(bytes(raw))
  with pytest.raises(ValueError, match=r"shard 1 \(shard-00001.psi0.npy\) "
                     "is corrupt"):
    data.open_dataset(path)
  open(target, "wb").write(bytes(raw[:len(raw) // 3]))
  with pytest.raises(ValueError, match=r"shard 1 \(shard-00001.psi0.npy\)"):
    data.open_dataset(path)
  with pytest.raises(ValueError, match="truncated or corrupt|cannot be read"):
    data.open_dataset(path, verify=False)
  os.remove(target)
  with pytest.raises(ValueError, match=r"shard-00001.psi0.npy\) is missing"):
    data.open_dataset(path)
  open(os.path.join(path, "meta.json"), "w").write("{not json")
  with pytest.raises(ValueError, match="meta.json is corrupt"):
    data.open_dataset(path)


def test_batches_visit_each_sample_once_per_epoch(reference):
  ds = data.open_dataset(reference)
  epoch0 = [b["index"] for b in ds.batches(6, seed=3, epoch=0,
                                           drop_remainder=False)]
  seen = np.concatenate([np.asarray(i) for i in epoch0])
  assert sorted(seen.tolist()) == list(range(20))
  again = [b["index"] for b in ds.batches(6, seed=3, epoch=0,
                                          drop_remainder=False)]
  assert all((np.asarray(a) == np.asarray(b)).all()
             for a, b in zip(epoch0, again))
  epoch1 = np.concatenate([np.asarray(b["index"]) for b in ds.batches(
      6, seed=3, epoch=1, drop_remainder=False)])
  assert sorted(epoch1.tolist()) == list(range(20))
  assert (epoch1 != seen).any()
  dropped = list(ds.batches(6, seed=3, epoch=0))
  assert len(dropped) == 3 and all(len(b["E0"]) == 6 for b in dropped)
  batch = dropped[0]
  assert isinstance(batch["potential"], jax.Array)
  assert batch["potential"].dtype == np.float32
  rows = np.asarray(batch["index"])
  np.testing.assert_allclose(batch["E0"], np.asarray(ds.E0)[rows], rtol=1e-6)
  np.testing.assert_allclose(batch["psi0"], np.asarray(ds.psi0)[rows],
                             rtol=1e-5, atol=1e-6)


def test_sharded_array_indexing(reference):
  ds = data.open_dataset(reference)
  full = np.asarray(ds.E0)
  assert ds.E0[9] == full[9] and ds.E0[-1] == full[-1]
  np.testing.assert_array_equal(ds.E0[3:17:2], full[3:17:2])
  idx = np.array([19, 0, 8, 7, 8])
  np.testing.assert_array_equal(ds.E0[idx], full[idx])
  with pytest.raises(IndexError):
    ds.E0[20]


def test_standard_splits_do_not_share_potentials(tmp_path):
  specs = data.standard_splits("gaussian_wells", GRID, 6, 4, shard_size=4)
  assert list(specs) == ["train", "val", "test_interp", "test_extrap",
                         "ood_harmonic", "ood_double_well", "ood_box_well",
                         "ood_random_smooth"]
  loaded = {}
  for name in ("train", "val", "test_interp", "test_extrap"):
    data.generate(str(tmp_path / name), specs[name])
    loaded[name] = np.asarray(data.open_dataset(str(tmp_path / name))
                              .potentials)
  rows = np.concatenate([v.reshape(len(v), -1) for v in loaded.values()])
  assert len(np.unique(rows, axis=0)) == len(rows)
  # Extrapolation: every well is deeper than any training well.
  assert loaded["test_extrap"].min(axis=(1, 2)).max() < -10.0 + 1e-9
  assert loaded["train"].min(axis=(1, 2)).min() > -40.0


def test_failed_samples_are_recorded_not_kept(tmp_path):
  path = str(tmp_path / "strict")
  meta = data.generate(path, spec(num_samples=4, tol=1e-30))
  assert meta["complete"] and meta["num_samples"] == 0
  assert [f["index"] for f in meta["failed"]] == [0, 1, 2, 3]
  assert "residual" in meta["failed"][0]["reason"]
  with pytest.raises(ValueError, match="holds no samples"):
    data.open_dataset(path)


def test_validation_rejects_an_energy_that_is_not_the_states(reference):
  # A solver that returned E0 = -9 Ha with a state whose own energy is 15 Ha
  # (the near-degenerate LOBPCG failure) must never reach a shard: the
  # residual is measured with the stored energy and a fresh H.
  ds = data.open_dataset(reference)
  v = np.asarray(ds.potentials[:2])
  psi = np.asarray(ds.psi0[:2])
  e = np.asarray(ds.E0[:2])
  residuals, reasons = data.check_samples(v, psi, e, ds.grid, 1e-8)
  assert reasons == ["", ""] and (residuals < 1e-8).all()
  residuals, reasons = data.check_samples(
      v, psi, e - np.array([9.0, 1e-6]), ds.grid, 1e-8)
  assert all(r.startswith("residual") for r in reasons), reasons


def test_lobpcg_generation_matches_eigsh(reference, tmp_path):
  path = str(tmp_path / "train")
  data.generate(path, spec(solver="lobpcg"))
  a, b = data.open_dataset(path), data.open_dataset(reference)
  np.testing.assert_allclose(np.asarray(a.E0), np.asarray(b.E0), atol=1e-8)
  np.testing.assert_allclose(np.asarray(a.psi0), np.asarray(b.psi0),
                             atol=1e-6)
  assert a.meta["spec"]["solver"] == "lobpcg"


def test_refuses_to_replace_a_different_dataset(reference, tmp_path):
  path = str(tmp_path / "train")
  data.generate(path, spec(num_samples=8))
  before = read_all(path)
  with pytest.raises(ValueError, match=r"holds a different dataset \(differs "
                     r"in: num_samples, seed\).*--overwrite"):
    data.generate(path, spec(num_samples=9, seed=1))
  assert read_all(path) == before  # nothing lost
  data.generate(path, spec(num_samples=9, seed=1), overwrite=True)
  assert data.open_dataset(path).spec.seed == 1
  other = tmp_path / "notes"
  other.mkdir()
  (other / "thesis.tex").write_text("precious")
  with pytest.raises(ValueError, match="does not hold a pgmoe_jax dataset.*"
                     "Nothing was deleted"):
    data.generate(str(other), spec(), overwrite=True)
  assert (other / "thesis.tex").read_text() == "precious"


def test_other_package_version_complete_is_used_unfinished_refused(tmp_path):
  path = str(tmp_path / "train")
  data.generate(path, spec(num_samples=8, shard_size=4))
  meta_file = os.path.join(path, "meta.json")
  meta = json.loads(pathlib.Path(meta_file).read_text())
  meta["package_version"] = "0.1.0"
  pathlib.Path(meta_file).write_text(json.dumps(meta))
  before = read_all(path)
  data.generate(path, spec(num_samples=8, shard_size=4))  # nothing to do
  assert read_all(path) == before
  meta["complete"] = False
  meta["shards"] = meta["shards"][:1]
  pathlib.Path(meta_file).write_text(json.dumps(meta))
  with pytest.raises(ValueError, match="differs in: package_version"):
    data.generate(path, spec(num_samples=8, shard_size=4))


def test_bad_specs_and_grid_mismatch(reference):
  with pytest.raises(ValueError, match="known families: box_well"):
    spec(family="gaussian")
  with pytest.raises(ValueError, match="Unknown range.*deepness.*valid: "
                     "centre_fraction, depth, num_wells, width"):
    spec(ranges={"deepness": (1, 2)})
  with pytest.raises(ValueError, match="known solvers: eigsh, lobpcg"):
    spec(solver="arpack")
  with pytest.raises(ValueError, match="num_samples must be a positive"):
    spec(num_samples=0)
  with pytest.raises(ValueError, match=r"is on Grid\(16x16.*but "
                     r"the caller is on Grid\(32x32"):
    data.open_dataset(reference, grid=Grid((32, 32), 20.0))
  with pytest.raises(ValueError, match="has no meta.json"):
    data.open_dataset(os.path.dirname(reference))


def test_spec_round_trips_through_json(reference):
  meta = json.loads(pathlib.Path(reference, "meta.json").read_text())
  assert data.DatasetSpec.from_json(meta["spec"]).to_json() == meta["spec"]
  assert meta["spec"]["ranges"]["depth"] == [1.0, 10.0]
  assert all(len(s["sha256"]) == 6 for s in meta["shards"])


def test_potential_stream_inside_jit():
  sample = potentials.make_potential_stream("gaussian_wells", GRID, 5)

  @jax.jit
  def step(key, i):
    v = sample(jax.random.fold_in(key, i))
    return v.min(axis=(1, 2))

  key = jax.random.key(0)
  a, b, c = step(key, 0), step(key, 0), step(key, 1)
  assert a.shape == (5,) and a.dtype == np.float32
  np.testing.assert_array_equal(a, b)
  assert (np.asarray(a) != np.asarray(c)).any()
  assert (np.asarray(a) < -1.0 + 1e-6).all()  # every sample has a 1-10 Ha well


def test_batches_sharded_across_devices(reference):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  code = f"""
import jax, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from pgmoe_jax import data
from pgmoe_jax import potentials
assert len(jax.devices()) == 4
mesh = Mesh(np.array(jax.devices()), ("batch",))
ds = data.open_dataset({reference!r})
sharding = NamedSharding(mesh, PartitionSpec("batch"))
batch = next(ds.batches(8, sharding=sharding))
shards = batch["potential"].addressable_shards
assert len(shards) == 4 and shards[0].data.shape == (2, 16, 16), shards
np.testing.assert_allclose(np.asarray(batch["E0"]),
                           np.asarray(ds.E0)[np.asarray(batch["index"])],
                           rtol=1e-6)
print("ok")
"""
  env = four_cpu_devices_env()
  out = subprocess.run([sys.executable, "-c", code], env=env,
                       capture_output=True, text=True, timeout=120,
                       check=False)
  assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_dataset_from_arrays_behaves_like_an_opened_one(reference):
  ds = data.open_dataset(reference)
  mine = data.Dataset.from_arrays(
      ds.grid, np.asarray(ds.potentials), 2.5 * np.asarray(ds.psi0),
      np.asarray(ds.E0), E1=np.asarray(ds.E1), name="mine")
  assert len(mine) == len(ds) and mine.path is None and mine.name == "mine"
  # psi0 normalised on the way in; the residual measured, not trusted.
  np.testing.assert_allclose(mine.psi0[:], ds.psi0[:], atol=1e-12)
  np.testing.assert_allclose(mine.residual[:], ds.residual[:], atol=1e-10)
  a = next(mine.batches(8, seed=3))
  b = next(ds.batches(8, seed=3))
  for key in ("potential", "psi0", "E0", "E1", "index"):
    np.testing.assert_allclose(np.asarray(a[key]), np.asarray(b[key]),
                               atol=1e-6)
  assert len(mine.head(5)) == 5
  with pytest.raises(ValueError, match=r"psi0 has shape \(3, 16, 16\)"):
    data.Dataset.from_arrays(ds.grid, ds.potentials[:4], ds.psi0[:3],
                             ds.E0[:4])
  with pytest.raises(ValueError, match="no samples"):
    data.Dataset.from_arrays(ds.grid, np.zeros((0,) + ds.grid.shape),
                             np.zeros((0,) + ds.grid.shape), np.zeros(0))
  v = np.array(ds.potentials[:2])
  v[1, 3, 4] = np.nan
  with pytest.raises(ValueError, match="potential holds 1 non-finite"):
    data.Dataset.from_arrays(ds.grid, v, ds.psi0[:2], ds.E0[:2])


def test_check_labels_finds_a_wrong_label_and_gates_a_script(reference):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top

  check_labels = import_script("check_labels")
  ds = data.open_dataset(reference)
  e0 = np.asarray(ds.E0[:3]).copy()
  e0[1] += 1e-3  # a label off by 1 mHa
  wrong = data.Dataset.from_arrays(GRID, ds.potentials[:3], ds.psi0[:3], e0)
  rows, _ = check_labels.check_split(wrong, 5, "lobpcg")
  assert len(rows) == 3
  de0 = [row[3] for row in rows]
  assert abs(de0[1] - 1e-3) < 1e-8 and abs(de0[0]) < 1e-8, de0
  assert all(abs(row[4]) < 1e-10 and row[5] is None for row in rows)
  # ARPACK's Lanczos (no factorisation) finds the same error, and also
  # checks E1 where the split stores it.
  rows, _ = check_labels.check_split(wrong, 5, "lanczos")
  de0 = [row[3] for row in rows]
  assert abs(de0[1] - 1e-3) < 1e-8 and abs(de0[0]) < 1e-8, de0
  assert all(abs(row[4]) < 1e-10 for row in rows)
  rows, _ = check_labels.check_split(ds, 2, "lanczos")
  assert all(abs(row[3]) < 1e-8 for row in rows), rows
  assert all(ds.E1 is None or abs(row[5]) < 1e-8 for row in rows), rows
  with pytest.raises(ValueError, match="known: eigsh, lanczos, lobpcg"):
    check_labels.check_split(ds, 2, "arnoldi")
  # The command on eigsh labels re-solved by LOBPCG: they agree to 1e-8
  # Ha, and a tolerance below that fails with status 1.
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run(
      [sys.executable, "-m", "experiments.check_labels", f"--data={reference}",
       "--num=2", "--method=lobpcg", "--tol=1e-30"], cwd=root,
      env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True,
      text=True, timeout=300, check=False)
  assert "labelled by eigsh; 2 samples re-solved by lobpcg" in out.stdout
  worst = float(out.stdout.split("largest |dE0| = ")[1].split()[0])
  assert worst < 1e-8, out.stdout
  assert out.returncode == 1 and ": FAIL" in out.stdout, out.stderr[-2000:]


def test_check_labels_verdict_fails_on_nan():
  check_labels = import_script("check_labels")
  assert check_labels.verdict([1e-9, -2e-9], 1e-8) == (2e-9, True)
  assert check_labels.verdict([1e-9, 3e-8], 1e-8) == (3e-8, False)
  worst, ok = check_labels.verdict([1e-9, float("nan"), 2e-9], 1e-8)
  assert np.isnan(worst) and not ok
  worst, ok = check_labels.verdict([float("inf")], 1e-8)
  assert worst == float("inf") and not ok
