#!/usr/bin/env bash
# On a GPU machine with Python, PyTorch and CUDA but no package index. First copy to /tmp/gpu-kit a kit of
# Python 3.12 wheels unpacked and xz-compressed into parts (kit.part.*): onnxruntime-gpu 1.31.1 (CUDA 13) and the
# service's dependencies, with its unpack.sh, which joins the parts into /tmp/gpu-kit/site and writes env.sh
# (PYTHONPATH to the site, LD_LIBRARY_PATH to the CUDA libraries of the machine's nvidia packages). Then:
#   bash loadtests/gpu/check.sh tests            # unpack the kit, the CUDA tests of tests/unit/service/runtime/
#   bash loadtests/gpu/check.sh bench MODEL ...  # python -m loadtests.bench_gpu --models MODEL --merge ...
#   bash loadtests/gpu/check.sh search ...       # python -m loadtests.bench_gpu_search ... (1M x 384 exact search)
# Issue 25 in one 15-minute lease (sized to fit; each bench call's report survives a time-out), e.g.:
#   bash loadtests/gpu/check.sh tests
#   bash loadtests/gpu/check.sh bench --models vjepa2l --attention mha,unfused --ort-fusions '' --seconds 1.5 \
#       --clip-batches 4,8 --instances 2 --clip-max-batches 8 --skip-http
#   bash loadtests/gpu/check.sh bench --models vitl16,vits16 --seconds 1.5 --batches 64,256 --instances 2 \
#       --max-batches 128 --http-levels 64 --http-formats jpeg
#   bash loadtests/gpu/check.sh search --seconds 2 --single 200   # exact search of 1M x 384 on the GPU (minutes)
# Results go to $OUT (the device tool's return folder) or ./gpu-out.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-gpu-out}; mkdir -p "$out"
[ -f /tmp/gpu-kit/env.sh ] || bash /tmp/gpu-kit/unpack.sh >"$out/unpack.log" 2>&1 || { cat "$out/unpack.log"; exit 1; }
. /tmp/gpu-kit/env.sh
export PYTHONPATH=$PWD:$PYTHONPATH
mkdir -p /tmp/bench-out
case "${1:-tests}" in
  tests)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
    python3 -m pytest -q -p no:cacheprovider -o addopts= tests/unit/service/runtime/test_runtime.py \
      tests/unit/service/runtime/test_cuda_graphs.py \
      tests/unit/service/index/test_device_search.py -rs 2>&1 | tee "$out/cuda-tests.log" | tail -15 ;;
  search)
    shift
    python3 -m loadtests.bench_gpu_search --out "$out" "$@" 2>&1 | tee -a "$out/search.log" ;;
  bench)
    shift
    # the report is rewritten after each model, straight into $out: a run cut short still brings back what it measured
    [ -f /tmp/bench-out/gpu.json ] && [ ! -f "$out/gpu.json" ] && cp /tmp/bench-out/gpu.json "$out/"
    python3 -m loadtests.bench_gpu --merge --out "$out" "$@" 2>&1 | grep -v "^W1127\|Warning" | tee -a "$out/bench.log"
    mkdir -p /tmp/bench-out && cp "$out"/gpu.json /tmp/bench-out/ 2>/dev/null ;;
esac
