#!/usr/bin/env bash
# The GPU check: run this once the moment a machine with a CUDA GPU is available (under 8 minutes on one H200).
#
#   bash benchmarks/gpu_check.sh            # the CUDA tests, then every GPU figure against its baseline
#   bash benchmarks/gpu_check.sh --dry-run  # tiny sizes on the CPU (tests/test_gpu_check.py runs this)
#
# It uses the machine's own python3 (PYTHON=... to choose another) with this checkout's src/ on the path: nothing is
# installed or downloaded (random-init models from real configs; see benchmarks/gpu_check.py). Output goes to
# $OUT/gpu_check/ when OUT is set, else out/gpu_check/: results.json, log.txt, pytest.txt. Record the printed
# figures in benchmarks/RESULTS.md.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
DIR="${OUT:-out}/gpu_check"
mkdir -p "$DIR"
status=0
if [[ " $* " != *" --dry-run "* ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
  echo "== the CUDA tests (pytest -m gpu)"
  "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py 2>&1 | tee "$DIR/pytest.txt" || status=1
fi
echo "== figures"
"$PY" benchmarks/gpu_check.py "$@" --out "$DIR/results.json" 2>&1 | tee "$DIR/log.txt" || status=1
exit $status
