#!/usr/bin/env bash
# On a machine with a CUDA GPU, in under 10 minutes: the CUDA tests (tests/test_cuda.py), then the
# images/s of ERM, L2B and MOIT on CIFAR-shaped data (random tensors: no CIFAR needed), PreAct
# ResNet-18, bf16 then fp32, printed as a Markdown table for BENCHMARKS.md (90 s on an NVIDIA H200).
# Usage: bash scripts/gpu_check.sh   (on a lent device machine: run it as it is, carry nothing;
# its python3 has torch and the test dependencies, and there is no network to install from).
# Python: $PYTHON if set, else .venv when it imports torch, else python3; src/ is on PYTHONPATH.
# Both parts run whatever the other does; their logs, the raw rows (gpu_speed.json) and each row
# as it is measured go to $OUT (a lent machine sends that folder back), else runs/gpu-check.
# MOIT's kNN detection runs on the CPU (its vote does), inside the timed epochs.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null; then PY=.venv/bin/python
else PY=python3; fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PY" -c "import torch" 2>/dev/null || { echo "gpu_check: $PY cannot import torch" >&2; exit 2; }
"$PY" -c "import torch, sys; sys.exit(0) if torch.cuda.is_available() else sys.exit('gpu_check: no CUDA device is visible')" || exit 2
"$PY" -c "import noisytail.train, noisytail.speed" || { echo "gpu_check: noisytail does not import with $PY" >&2; exit 2; }
DEST="${OUT:-runs/gpu-check}"
mkdir -p "$DEST"
"$PY" -c "import torch, platform; print('GPU:', torch.cuda.get_device_name(), '| torch', torch.__version__, '| Python', platform.python_version())" | tee "$DEST/gpu.txt"
echo "== CUDA tests"
timeout 200 "$PY" -m pytest -m cuda -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$DEST/cuda_tests.log"
tests_rc=${PIPESTATUS[0]}
echo "== images/s (median of 2 timed epochs after a warm-up epoch)"
timeout 240 "$PY" scripts/bench_speed.py --device cuda --data cifar --model preact_resnet18 \
  --methods erm l2b moit --subset 20000 --batch-size 256 --epochs 2 --precisions bf16 fp32 \
  --json "$DEST/gpu_speed.json" 2>&1 | tee "$DEST/gpu_speed.log"
speed_rc=${PIPESTATUS[0]}
echo "gpu_check: CUDA tests exit $tests_rc, images/s exit $speed_rc (files in $DEST)"
[ "$tests_rc" -eq 0 ] && [ "$speed_rc" -eq 0 ]
