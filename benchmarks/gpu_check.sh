#!/usr/bin/env bash
# The device check of the GPU kernels: one call on a lent H100/H200, under 8 minutes.
#
#   bash benchmarks/gpu_check.sh            # writes $OUT/gpu_check.txt (OUT defaults to
#                                           # h2mv_outputs/gpu_check)
#
# (a) the tests marked gpu, compiled on CUDA (Triton kernels against numba, the hybrid's
#     scans on CUDA against the CPU); (b) throughput: bucket scan and training steps, the
#     Triton kernels against the per-day loop on the same GPU (benchmarks/gpu_throughput.py);
#     (c) the quickstart, 2 epochs, on the CPU (float32) and on CUDA (bf16-mixed and
#     float32), end tables printed. Every section runs, whatever the previous one did, under
#     its own time limit; everything goes to one file.
#
# Python packages the machine lacks can be given as wheels in .whl/ (installed to
# /tmp/site, no index); the project is used from this checkout (PYTHONPATH).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-h2mv_outputs/gpu_check}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.txt"
PY=${PYTHON:-python3}
WORK=${WORK:-/tmp/h2mv_gpu_check}
mkdir -p "$WORK"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

section() { echo; echo "## $1 ($(date -u +%H:%M:%S))"; }
{
    section "machine"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    $PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__,
'device', torch.cuda.get_device_name())"
    uptime

    section "(a) tests marked gpu, on CUDA"
    timeout 150 $PY -m pytest -q -p no:cacheprovider -m gpu tests/test_triton.py tests/test_cuda.py
    echo "exit: $?"

    section "(b) throughput"
    timeout 170 $PY benchmarks/gpu_throughput.py
    echo "exit: $?"

    section "(c) quickstart, 2 epochs"
    timeout 60 $PY -m h2mv_hybrid.cli synth --out "$WORK/twin.zarr" | tail -1
    fit() {  # name, then options
        local name=$1; shift
        local t0=$SECONDS
        timeout 100 $PY -m h2mv_hybrid.cli fit --config experiments/quickstart.yaml \
            --data.store "$WORK/twin.zarr" --trainer.max_epochs 2 --trainer.logger false \
            --trainer.enable_progress_bar false --trainer.default_root_dir "$WORK/$name" "$@" \
            2>"$WORK/$name.err" | sed -n '/^validation scores/,/^  total/p'
        echo "[$name: exit ${PIPESTATUS[0]}, $((SECONDS - t0)) s wall]"
        tail -3 "$WORK/$name.err"
    }
    fit cpu --trainer.accelerator cpu
    fit cuda_bf16 --trainer.accelerator gpu --trainer.devices 1 --trainer.precision bf16-mixed
    fit cuda_fp32 --trainer.accelerator gpu --trainer.devices 1
} 2>&1 | tee "$LOG"
