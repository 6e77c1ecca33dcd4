#!/usr/bin/env bash
# One short, prepared check on an accelerator machine (GPU or TPU), run from
# the repository root with the package installed (pip install -e '.[test]'
# and a JAX build for the accelerator):
#
#   bash experiments/device_check.sh            # about 10 minutes on a GPU
#   QUICK=1 bash experiments/device_check.sh    # a smoke run (small sizes,
#                                               # the core tests only)
#   PARTS="front" bash experiments/device_check.sh   # some parts only
#
# It runs, on the default JAX backend (JAX_PLATFORMS chooses it):
#   1. the test suite on that backend (tests/conftest.py defaults to the
#      CPU; here JAX_PLATFORMS is set to the accelerator's platform);
#   2. python -m experiments.benchmark --what=population,predict: member-
#      steps/s of populations of the quick-start PG-MoE (K = 1 ... 32) against
#      K runs one after another (its first figure is the quick start's
#      training steps/s), and PG-MoE predictions/s against the JAX LOBPCG at
#      32, 64 and 128 points per axis.
#   3. python -m experiments.benchmark --what=front: universal_64 on the
#      universal test splits at 64x64 (256 each) and gaussian3d_32 on 200
#      3-D gaussian wells, against the cascade's settings (its full size
#      even with QUICK=1); the labelled splits are generated first under
#      $DATA (default data/; reused when present).
# PARTS picks among "tests bench front" (default: all three).
# Everything it prints also goes to $OUT/BENCHMARKS.md (default
# results/device_check/), headed by the device, date and versions, ready to
# paste into BENCHMARKS.md. Exit status: that of the tests (the benchmarks
# run either way).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
OUT=${OUT:-results/device_check}
DATA=${DATA:-data}
PARTS=${PARTS:-tests bench front}
mkdir -p "$OUT"
REPORT="$OUT/BENCHMARKS.md"

# JAX_PLATFORMS takes "cuda" or "rocm" for a GPU ("gpu" would ask for both).
platform=$("$PY" -c 'import jax
b = jax.default_backend()
if b == "gpu":
  from jax.extend import backend
  b = "rocm" if "rocm" in backend.get_backend().platform_version.lower() else "cuda"
print(b)')
export JAX_PLATFORMS="$platform"
device=$("$PY" -c 'import jax; d = jax.devices(); print(f"{len(d)} x {d[0].device_kind} ({d[0].platform})")')
versions=$("$PY" -c 'import jax, flax, optax; print(f"jax {jax.__version__}, flax {flax.__version__}, optax {optax.__version__}")')

if [ -n "${QUICK:-}" ]; then
  tests=(tests/test_hamiltonian.py tests/test_variational.py
         tests/test_population.py)
  quick=--quick
else
  tests=(tests)
  quick=
fi

{
  echo "## $device, $(date -u +%F)"
  echo
  echo "$versions; \`${QUICK:+QUICK=1 }PARTS=\"$PARTS\" bash experiments/device_check.sh\`."
  echo
} > "$REPORT"

test_status=0
if [[ " $PARTS " == *" tests "* ]]; then
  { echo "### Tests on $platform"; echo; echo '```'; } >> "$REPORT"
  start=$(date +%s)
  "$PY" -m pytest -q -p no:cacheprovider "${tests[@]}" 2>&1 | tail -n 5 \
    | tee -a "$REPORT"
  test_status=${PIPESTATUS[0]}
  echo "(${platform}, $(( $(date +%s) - start )) s)" | tee -a "$REPORT"
  echo '```' >> "$REPORT"
fi

if [[ " $PARTS " == *" bench "* ]]; then
  "$PY" -m experiments.benchmark --what=population,predict $quick \
    2> "$OUT/benchmark.log" | tee -a "$REPORT"
  bench_status=${PIPESTATUS[0]}
  if [ "$bench_status" -ne 0 ]; then
    echo "benchmark failed (exit $bench_status); see $OUT/benchmark.log" \
      | tee -a "$REPORT"
    tail -n 20 "$OUT/benchmark.log"
  fi
fi

if [[ " $PARTS " == *" front "* ]]; then
  "$PY" -m experiments.generate_data --universal_splits --grid=64 \
    --num_eval=256 --out="$DATA/front64" > "$OUT/generate.log" 2>&1
  "$PY" -m experiments.generate_data --family=gaussian_wells --ndim=3 \
    --grid=32 --num=200 --seed=1 --solver=lobpcg --chunk_size=200 \
    --out="$DATA/gw3d32/test" >> "$OUT/generate.log" 2>&1
  splits=$(ls -d "$DATA"/front64/test_* | paste -sd, -)
  for run in "universal_64 $splits front64" \
             "gaussian3d_32 $DATA/gw3d32/test front3d"; do
    set -- $run
    "$PY" -m experiments.benchmark --what=front --model="$1" --data="$2" \
      --front_out="$OUT/$3" 2> "$OUT/$3.log" | tee -a "$REPORT"
    front_status=${PIPESTATUS[0]}
    if [ "$front_status" -ne 0 ]; then
      echo "front benchmark failed (exit $front_status); see $OUT/$3.log" \
        | tee -a "$REPORT"
      tail -n 20 "$OUT/$3.log"
    fi
  done
fi
echo "wrote $REPORT"
exit "$test_status"
