#!/usr/bin/env bash
# One prepared call on the lent GPU machine (../shared/reference/gpu.md), everything written to
# $OUT as it arrives. Parts, in the order of GPU_SESSION_PARTS (default below):
#   compile  - the training step of the first config at batch GPU_SESSION_BATCH, float32, cold
#              cache, alone on the GPU with JAX's default preallocation (compile time, step time,
#              peak memory, XLA's memory analysis, per-function compile log), and beside it the
#              same step compiled only with --xla_gpu_autotune_level=0 (what autotuning costs);
#   cold     - the compile part's cold step alone (no autotune-level-0 compile beside it);
#   warm     - the same step again in a new process with the cache the cold one filled;
#   train    - benchmarks/against_torch.py, training step only, PyTorch reference side by side
#              (float32 from the cache the compile part filled, then bfloat16);
#   profile  - benchmarks/op_profile.py: where one animated frame's time goes at batch 1;
#   animate  - benchmarks/against_torch.py, animation only: one frame per call and batched,
#              float32 and bfloat16, same weights;
#   bg       - (background) the training step with --xla_gpu_autotune_level=0, cold, into the
#              same cache, measured while the next parts run; "wait" waits for it;
#   level1, level2, level3 - the training step compiled with --xla_gpu_autotune_level=N (1: tuned
#              on uninitialised buffers; 2: initialised; 3: reinitialised between candidates; XLA's
#              default 4 also checks each candidate against a reference), cold, alone, with
#              preallocation, into its own cache: compile time, step time, and XLA's autotuning log;
#   cmdbuf   - animation with the convolutions inside XLA's command buffers (CUDA graphs;
#              --xla_gpu_enable_command_buffer=+CONVOLUTION) against XLA's default set:
#              benchmarks/animate.py at batch 1 and GPU_SESSION_BATCH both ways, then
#              against_torch.py (animation, float32 and bfloat16) with the flag;
#   level0   - the training step compiled with --xla_gpu_autotune_level=0, alone on the GPU with
#              preallocation, cold, into its own cache: compile time and what the knob costs in
#              step time;
#   train0   - as train, the JAX side with --xla_gpu_autotune_level=0 from level0's cache;
#   profiles - op_profile.py for one frame per call (float32) and batch GPU_SESSION_BATCH
#              (bfloat16);
#   trainprofile - op_profile.py --path train: where the float32 training step's time goes, its
#              program loaded from the cache the train (or compile) part filled;
#   startup  - benchmarks/startup.py (main's first step and the first animated frame, cold and
#              warm cache) for the first config, when time is left;
#   animstart - benchmarks/startup.py --no-train: the first animated frame only (cold, warm);
#   convtaps - the training step with MMFA_JAX_CONV=depth_taps (each 3D convolution a sum of 2D
#              ones over its depth taps), cold, into its own cache: against the compile part's
#              default (cuDNN's 3D convolutions);
#   backend  - seconds to bring JAX's GPU backend up (jax.devices()) in a bare process;
#   warp     - benchmarks/grid_sample.py (the dense 3D warp, forward and backward) with and
#              without the float32 scatter-add workaround flag, PyTorch beside it.
# Everything lands in $OUT/results.tgz and $OUT/results is removed.
# A part starts only when GPU_SESSION_BUDGET seconds are not yet spent. Parts where PyTorch and
# JAX share the GPU turn JAX's preallocation off; the others keep it (with it off, the process
# that autotuned could not find one 45 GiB block for the step's temporaries: measured
# 2026-11-27 on an H200). Dry-run on a CPU first:
#
#   OUT=/tmp/out GPU_SESSION_CONFIGS=synthetic:tiny:face_vid2vid GPU_SESSION_BATCH=2 \
#     GPU_SESSION_TORCH_CONFIG=synthetic:tiny:face_vid2vid GPU_SESSION_BUDGET=900 \
#     GPU_SESSION_PARTS="compile warm train profile animate" bash benchmarks/gpu_session.sh
#
# On the device: carry .whl (grain, ml_collections, array_record, dm-tree, importlib_resources,
# portpicker as gpu.md says) and run  bash benchmarks/gpu_session.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:?set OUT to a folder for the results}"
# The device tool brings back at most 8 files: results gather in $RES and leave as one archive
# (also when the script is stopped early).
RES="$OUT/results"
mkdir -p "$RES"
pack() { tar czf "$OUT/results.tgz" -C "$RES" . && rm -rf "$RES"; }
trap pack EXIT
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
configs="${GPU_SESSION_CONFIGS:-vox_face_vid2vid}"
first=${configs%% *}
parts="${GPU_SESSION_PARTS:-animate level0 train0 profiles warp animstart}"
torch_config="${GPU_SESSION_TORCH_CONFIG:-vox_face_vid2vid}"  # a face_vid2vid config
batch="${GPU_SESSION_BATCH:-16}"
budget="${GPU_SESSION_BUDGET:-500}"
start=$SECONDS
work=/tmp/mmfa_gpu_session
rm -rf "$work" && mkdir -p "$work"
cache="$work/cache"  # the cache of the compile, warm and train parts

python3 tools/env_info.py >"$RES/env.txt" 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >>"$RES/env.txt" 2>&1

left() { echo $((budget - (SECONDS - start))); }
mark() { echo "$1 at $((SECONDS - start)) s" >>"$RES/env.txt"; }

# One training step measurement in this shell's process tree: train_step.py's child mode, its
# RESULT line appended to $OUT/$2.jsonl, its log (per-function compile times) to $OUT/$2_*.log.
step() {  # step NAME DTYPE STEPS [env assignments...]
  local name=$1 dtype=$2 steps=$3
  shift 3
  env "$@" JAX_LOG_COMPILES=1 timeout "$(left)" python3 benchmarks/train_step.py \
    --config "$first" --steps "$steps" --one "$dtype" "$batch" >"$RES/${name}.log" 2>&1
  grep -h "^RESULT " "$RES/${name}.log" | sed 's/^RESULT //' >>"$RES/train_step.jsonl"
}

animate_part() {
  [ "$(left)" -gt 120 ] || return
  XLA_PYTHON_CLIENT_PREALLOCATE=false timeout "$(left)" python3 benchmarks/against_torch.py \
    --config "$torch_config" --no-train \
    --batch-sizes "$batch" --dtypes float32 bfloat16 --frames 8 \
    --json "$RES/against_torch.jsonl" >"$RES/animate.log" 2>&1
}

compile_part() {
  [ "$(left)" -gt 90 ] || return
  step knobs_autotune0 float32 0 MMFA_JAX_CACHE_DIR=none XLA_PYTHON_CLIENT_MEM_FRACTION=0.15 \
    XLA_FLAGS=--xla_gpu_autotune_level=0 &
  step cold float32 3 MMFA_JAX_CACHE_DIR="$cache"
  wait
}

cold_part() {
  [ "$(left)" -gt 90 ] || return
  step cold float32 3 MMFA_JAX_CACHE_DIR="$cache"
}

warm_part() {
  [ "$(left)" -gt 45 ] || return
  step warm float32 3 MMFA_JAX_CACHE_DIR="$cache"
}

bg_part() {
  step autotune0 float32 3 MMFA_JAX_CACHE_DIR="$cache" XLA_PYTHON_CLIENT_PREALLOCATE=false \
    XLA_FLAGS=--xla_gpu_autotune_level=0 &
}

wait_part() {
  wait
}

# GPU_SESSION_TRAIN_XLA_FLAGS: XLA_FLAGS of the training part (e.g. the autotune level bg used,
# so its step comes from the cache); GPU_SESSION_TRAIN_DTYPES: its dtypes.
train_part() {
  [ "$(left)" -gt 90 ] || return
  # shellcheck disable=SC2086
  JAX_LOG_COMPILES=1 XLA_FLAGS="${GPU_SESSION_TRAIN_XLA_FLAGS:-}" MMFA_JAX_CACHE_DIR="$cache" \
    XLA_PYTHON_CLIENT_PREALLOCATE=false timeout "$(left)" python3 benchmarks/against_torch.py \
    --config "$torch_config" --no-animate --train-batch "$batch" --dtypes ${GPU_SESSION_TRAIN_DTYPES:-float32 bfloat16} \
    --json "$RES/against_torch.jsonl" >"$RES/train.log" 2>&1
}

profile_part() {
  [ "$(left)" -gt 90 ] || return
  MMFA_JAX_CACHE_DIR="$cache" timeout "$(left)" python3 benchmarks/op_profile.py --path animate \
    --config "$torch_config" --batch-size 1 --top 30 --json "$RES/profile.jsonl" \
    >"$RES/profile.log" 2>&1
}

level0_part() {
  [ "$(left)" -gt 60 ] || return
  step level0 float32 5 MMFA_JAX_CACHE_DIR="$work/cache0" XLA_FLAGS=--xla_gpu_autotune_level=0
}

# Autotuning at a lower level: what it saves of the cold compile and what it costs in step time.
autotune_level() {  # autotune_level N
  [ "$(left)" -gt 100 ] || return
  step "level$1" float32 3 MMFA_JAX_CACHE_DIR="$work/cache_l$1" \
    XLA_FLAGS="--xla_gpu_autotune_level=$1 --xla_gpu_dump_autotune_logs_to=$RES/autotune_log_l$1.txt"
}
level1_part() { autotune_level 1; }
level2_part() { autotune_level 2; }
level3_part() { autotune_level 3; }

cmdbuf_part() {
  [ "$(left)" -gt 120 ] || return
  local flag=--xla_gpu_enable_command_buffer=+CONVOLUTION
  MMFA_JAX_CACHE_DIR="$work/cache_cb0" timeout "$(left)" python3 benchmarks/animate.py \
    --config "$torch_config" --batch-sizes 1 "$batch" --repeats 5 --json "$RES/animate_cmdbuf.jsonl" \
    >"$RES/animate_default.log" 2>&1
  XLA_FLAGS=$flag MMFA_JAX_CACHE_DIR="$work/cache_cb1" timeout "$(left)" python3 benchmarks/animate.py \
    --config "$torch_config" --batch-sizes 1 "$batch" --repeats 5 --json "$RES/animate_cmdbuf.jsonl" \
    >"$RES/animate_conv_cmdbuf.log" 2>&1
  XLA_FLAGS=$flag XLA_PYTHON_CLIENT_PREALLOCATE=false MMFA_JAX_CACHE_DIR="$work/cache_cb1" \
    timeout "$(left)" python3 benchmarks/against_torch.py --config "$torch_config" --no-train \
    --batch-sizes "$batch" --dtypes float32 bfloat16 --frames 8 \
    --json "$RES/against_torch_cmdbuf.jsonl" >"$RES/animate_cmdbuf_vs_torch.log" 2>&1
}

train0_part() {
  GPU_SESSION_TRAIN_XLA_FLAGS=--xla_gpu_autotune_level=0 cache="$work/cache0" train_part
}

profiles_part() {
  [ "$(left)" -gt 60 ] || return
  MMFA_JAX_CACHE_DIR="$cache" timeout "$(left)" python3 benchmarks/op_profile.py --path animate \
    --config "$torch_config" --batch-size 1 --top 30 --json "$RES/profile.jsonl" \
    >"$RES/profile_b1.log" 2>&1
  [ "$(left)" -gt 45 ] || return
  MMFA_JAX_CACHE_DIR="$cache" timeout "$(left)" python3 benchmarks/op_profile.py --path animate \
    --config "$torch_config" --batch-size "$batch" --dtype bfloat16 --top 30 \
    --json "$RES/profile.jsonl" >"$RES/profile_b${batch}_bf16.log" 2>&1
}

trainprofile_part() {
  [ "$(left)" -gt 60 ] || return
  MMFA_JAX_CACHE_DIR="$cache" timeout "$(left)" python3 benchmarks/op_profile.py --path train \
    --config "$torch_config" --batch-size "$batch" --cache --top 40 \
    --json "$RES/profile.jsonl" >"$RES/profile_train_b${batch}.log" 2>&1
}

# The dense warp's gradient is a float32 scatter-add: default flags against the workaround of jax
# issue 38806 (-nvptx-allow-ftz-atomics), and PyTorch's grid_sample, on the real volume sizes.
warp_part() {
  [ "$(left)" -gt 40 ] || return
  XLA_PYTHON_CLIENT_PREALLOCATE=false timeout "$(left)" python3 benchmarks/grid_sample.py \
    --torch-device cuda >"$RES/warp.log" 2>&1
  XLA_FLAGS=--xla_backend_extra_options=-nvptx-allow-ftz-atomics timeout "$(left)" \
    python3 benchmarks/grid_sample.py --skip-torch >>"$RES/warp.log" 2>&1
}

convtaps_part() {
  [ "$(left)" -gt 90 ] || return
  step convtaps float32 3 MMFA_JAX_CACHE_DIR="$work/cache_taps" MMFA_JAX_CONV=depth_taps
}

backend_part() {
  timeout 60 python3 -c "import time; s = time.perf_counter(); import jax; i = time.perf_counter()
jax.devices(); d = time.perf_counter(); jax.numpy.zeros(4).block_until_ready()
print(f'import jax {i - s:.2f} s, jax.devices() {d - i:.2f} s, first array {time.perf_counter() - d:.2f} s')" \
    >"$RES/backend.log" 2>&1
}

animstart_part() {
  [ "$(left)" -gt 40 ] || return
  JAX_LOG_COMPILES=1 timeout "$(left)" \
    python3 benchmarks/startup.py --configs "$torch_config" --no-train --workdir "$work/animstart" \
    --json "$RES/startup.jsonl" >"$RES/animstart.log" 2>&1
  # The commands' own logs (JAX_LOG_COMPILES: what was traced, compiled or loaded, and when).
  for log in "$work"/animstart/runs/*.log; do
    [ -f "$log" ] && cp "$log" "$RES/animstart_$(basename "$log" .png.log).log"
  done
}

startup_part() {
  [ "$(left)" -gt 150 ] || return
  timeout "$(left)" python3 benchmarks/startup.py --configs "$first" --batch-size "$batch" \
    --workdir "$work/startup" --json "$RES/startup.jsonl" >"$RES/startup.log" 2>&1
}

for part in $parts; do
  mark "$part starts"
  "${part}_part"
done
mark finished
