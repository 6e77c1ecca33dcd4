#!/usr/bin/env bash
# One short, prepared check on an accelerator machine (GPU or TPU), run from
# the repository root with the package installed (pip install -e '.[test]'
# and a JAX build for the accelerator):
#
#   bash experiments/device_check.sh            # about 10 minutes on a GPU
#   QUICK=1 bash experiments/device_check.sh    # a smoke run (small sizes,
#                                               # the core tests only)
#
# It runs, on the default JAX backend (JAX_PLATFORMS chooses it):
#   1. the test suite on that backend (tests/conftest.py defaults to the
#      CPU; here JAX_PLATFORMS is set to the accelerator's platform);
#   2. python -m experiments.benchmark --what=population,predict: member-
#      steps/s of populations of the quick-start PG-MoE (K = 1 ... 32) against
#      K runs one after another (its first figure is the quick start's
#      training steps/s), and PG-MoE predictions/s against the JAX LOBPCG at
#      32, 64 and 128 points per axis.
# Everything it prints also goes to $OUT/BENCHMARKS.md (default
# results/device_check/), headed by the device, date and versions, ready to
# paste into BENCHMARKS.md. Exit status: that of the tests (the benchmarks
# run either way).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
OUT=${OUT:-results/device_check}
mkdir -p "$OUT"
REPORT="$OUT/BENCHMARKS.md"

platform=$("$PY" -c 'import jax; print(jax.default_backend())')
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
  echo "$versions; \`${QUICK:+QUICK=1 }bash experiments/device_check.sh\`."
  echo
  echo "### Tests on $platform"
  echo
  echo '```'
} > "$REPORT"

start=$(date +%s)
"$PY" -m pytest -q -p no:cacheprovider "${tests[@]}" 2>&1 | tail -n 5 \
  | tee -a "$REPORT"
test_status=${PIPESTATUS[0]}
echo "(${platform}, $(( $(date +%s) - start )) s)" | tee -a "$REPORT"
echo '```' >> "$REPORT"

"$PY" -m experiments.benchmark --what=population,predict $quick \
  2> "$OUT/benchmark.log" | tee -a "$REPORT"
bench_status=${PIPESTATUS[0]}
if [ "$bench_status" -ne 0 ]; then
  echo "benchmark failed (exit $bench_status); see $OUT/benchmark.log" \
    | tee -a "$REPORT"
  tail -n 20 "$OUT/benchmark.log"
fi
echo "wrote $REPORT"
exit "$test_status"
