#!/usr/bin/env bash
# One prepared call on the lent GPU machine (../shared/reference/gpu.md): start-up of the vox
# training steps (cold and warm compilation cache), per-function compile times and the compile
# knobs, everything written to $OUT as it arrives. Dry-run it on a CPU first:
#
#   OUT=/tmp/out GPU_SESSION_CONFIGS=synthetic GPU_SESSION_BATCH=2 GPU_SESSION_BUDGET=900 \
#     GPU_SESSION_TORCH_CONFIG=synthetic:tiny:face_vid2vid \
#     bash benchmarks/gpu_session.sh
#
# On the device (carry .whl: grain, ml_collections, array_record, importlib_resources, ... as
# gpu.md says):  bash benchmarks/gpu_session.sh   (about 7 minutes; stops starting cases when
# GPU_SESSION_BUDGET seconds have passed). GPU_SESSION_PARTS picks and orders the parts
# (default "startup knobs against_torch"; e.g. "against_torch startup" to measure throughput first).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:?set OUT to a folder for the results}"
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
configs="${GPU_SESSION_CONFIGS:-vox vox_face_vid2vid}"
parts="${GPU_SESSION_PARTS:-startup knobs against_torch}"
torch_config="${GPU_SESSION_TORCH_CONFIG:-vox_face_vid2vid}"  # a face_vid2vid config
batch="${GPU_SESSION_BATCH:-16}"
budget="${GPU_SESSION_BUDGET:-420}"
start=$SECONDS
work=/tmp/mmfa_gpu_session
rm -rf "$work" && mkdir -p "$work"

python3 tools/env_info.py >"$OUT/env.txt" 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >>"$OUT/env.txt" 2>&1

left() { echo $((budget - (SECONDS - start))); }

startup_part() {
# 1. Start-up of each training config, cold then warm (new process each), with per-function
#    compile times in the log (JAX_LOG_COMPILES).
for config in $configs; do
  [ "$(left)" -gt 60 ] || break
  JAX_LOG_COMPILES=1 timeout "$(left)" python3 benchmarks/startup.py --configs "$config" \
    --batch-size "$batch" --workdir "$work/$config" --json "$OUT/startup.jsonl" \
    >"$OUT/startup_$config.log" 2>&1
  grep -HE "Finished (tracing|jaxpr to MLIR|XLA compilation)|compilation cache hit|first step" \
    "$work/$config"/runs/*.log 2>/dev/null | grep -vE "in 0\.0[0-9]+ sec" | head -300 \
    >"$OUT/compiles_$config.txt"
done

}

knobs_part() {
# 2. Compile knobs on the first config's step (cold cache each): what each costs in compile time
#    and in step time.
first=${configs%% *}
for flags in "--xla_gpu_autotune_level=0" "--xla_gpu_enable_llvm_module_compilation_parallelism=true"; do
  [ "$(left)" -gt 90 ] || break
  MMFA_JAX_CACHE_DIR=none XLA_FLAGS="$flags" timeout "$(left)" python3 benchmarks/train_step.py \
    --config "$first" --batch-sizes "$batch" --dtypes float32 --steps 3 --json "$OUT/knobs.jsonl" \
    >>"$OUT/knobs.log" 2>&1
  echo "XLA_FLAGS=$flags done at $((SECONDS - start)) s" >>"$OUT/knobs.log"
done
}

# 3. Side by side with the PyTorch reference (same weights, same device): animation one frame per
#    call and at batch $batch, the training step at batch $batch, float32 and bfloat16.
against_torch_part() {
  [ "$(left)" -gt 120 ] || return
  timeout "$(left)" python3 benchmarks/against_torch.py --config "$torch_config" \
    --batch-sizes "$batch" --train-batch "$batch" --dtypes float32 bfloat16 --frames 8 \
    --json "$OUT/against_torch.jsonl" >"$OUT/against_torch.log" 2>&1
}

for part in $parts; do
  "${part}_part"
done
echo "finished in $((SECONDS - start)) s" >>"$OUT/env.txt"
