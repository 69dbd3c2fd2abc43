#!/usr/bin/env bash
# tools/bench/h200.sh — everything the Vulkan forward pass is measured by, in one run on a GPU
# machine: correctness on the device first, then the kernel benchmarks, then the model benchmarks
# at real V4-Flash and V4-Pro dimensions. Results go to OUT_DIR (default ./bench-out), one file per
# step, and a summary to stdout. Needs ~50 GB of free disk for the synthetic models and ~20 min.
#
#   tools/bench/h200.sh BIN_DIR [OUT_DIR] [--quick]
#
# BIN_DIR holds a Release build's moestream, test_ops and test_golden (build-rel/ and
# build-rel/tests/ copied into one folder); run it from the repository root (the golden fixtures
# are read from tests/fixtures/v4). --quick: fewer reps and only the Flash model.
set -uo pipefail
B=${1:?usage: tools/bench/h200.sh BIN_DIR [OUT_DIR] [--quick]}
O=${2:-bench-out}
QUICK=0
for a in "$@"; do [ "$a" = --quick ] && QUICK=1; done
REPS=5
[ "$QUICK" = 1 ] && REPS=3
mkdir -p "$O"
M=${MODEL_DIR:-/tmp/ms-bench}
step() { echo "== $1"; }

step "device"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,memory.used --format=csv 2>/dev/null | tee "$O/device.txt"

step "correctness on the device (golden fixtures, every op, and with every fallback forced)"
"$B/test_golden" tests/fixtures/v4 --backend vulkan >"$O/golden.txt" 2>&1; echo "test_golden: $(tail -1 "$O/golden.txt")"
MOESTREAM_DISABLE_PUSH_DESCRIPTOR=1 MOESTREAM_DISABLE_TIMELINE_SEMAPHORE=1 MOESTREAM_DISABLE_TILED_GEMV=1 \
    "$B/test_golden" tests/fixtures/v4 --backend vulkan >"$O/golden_fallbacks.txt" 2>&1
echo "test_golden, fallbacks forced: $(tail -1 "$O/golden_fallbacks.txt")"
"$B/test_ops" -q >"$O/ops.txt" 2>&1; echo "test_ops: $(tail -1 "$O/ops.txt")"

step "kernels (GEMV, moe stages, GEMM; medians after warm-up)"
"$B/test_ops" --perf --peak 4800 --reps "$REPS" >"$O/perf.txt" 2>&1; grep -E "^perf" "$O/perf.txt" | head -40

step "models"
bench() { # NAME SYNTH_ARGS... -- BENCH_ARGS...
    local name=$1; shift
    local sargs=() bargs=()
    while [ "$#" -gt 0 ] && [ "$1" != -- ]; do sargs+=("$1"); shift; done
    shift
    bargs=("$@")
    rm -rf "$M"
    "$B/moestream" synth -o "$M" "${sargs[@]}" --no-mtp >"$O/synth_$name.txt" 2>&1 || { echo "synth $name failed"; return; }
    "$B/moestream" bench -m "$M" --backend vulkan --peak 4800 --reps "$REPS" "${bargs[@]}" >"$O/bench_$name.csv" 2>"$O/bench_$name.err"
    cat "$O/bench_$name.csv"
}
bench flash43 --like flash --layers 43 --experts 8 -- --ctx 0,4096 --prefill 512 --chunk 512 --gen 32 --profile
[ "$QUICK" = 1 ] || bench pro20 --like pro --layers 20 --experts 8 -- --ctx 0,4096,32768 --prefill 512 --chunk 512 --gen 32 --profile
[ "$QUICK" = 1 ] || bench flash4x256 --like flash --layers 4 --experts 256 -- --ctx 0 --prefill 512 --chunk 512 --gen 32
rm -rf "$M"
