#!/usr/bin/env bash
# On a machine with a CUDA GPU, in under 10 minutes: the CUDA tests (tests/test_cuda.py), then the
# images/s of ERM, L2B and MOIT on CIFAR-shaped data (random tensors: no CIFAR needed), PreAct
# ResNet-18, fp32 and bf16, printed as a Markdown table for BENCHMARKS.md.
# Usage: bash scripts/gpu_check.sh            (or: make gpu-check)
# It uses $PYTHON if set, else .venv when there is one, else the python3 on PATH with src/ on PYTHONPATH (a GPU machine
# that already has torch, torchvision, numpy, scikit-learn, pyyaml, click, tqdm and pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3; export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"; fi
"$PY" -c "import torch" 2>/dev/null || { echo "gpu_check: $PY cannot import torch (run make setup first)" >&2; exit 2; }
export PYTHONUNBUFFERED=1
"$PY" -c "import torch, sys; sys.exit(0) if torch.cuda.is_available() else sys.exit('gpu_check: no CUDA device is visible')"
"$PY" -c "import torch; print('GPU:', torch.cuda.get_device_name(), '| torch', torch.__version__)"
echo "== CUDA tests"
timeout 240 "$PY" -m pytest -m cuda -q -p no:cacheprovider tests/test_cuda.py
echo "== images/s (median of 2 timed epochs after a warm-up epoch)"
timeout 300 "$PY" scripts/bench_speed.py --device cuda --data cifar --model preact_resnet18 \
  --methods erm l2b moit --subset 20000 --batch-size 256 --epochs 2 --precisions fp32 bf16
