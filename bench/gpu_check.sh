#!/usr/bin/env bash
# One-shot GPU check (< 8 minutes on one GPU): run it whenever a GPU machine with this project's environment is
# available and put the summary in bench/README.md.
#   1. bench/cuda_paths.py at ViT-B/16 size: fp16 and amp paths of every backbone and its DPC version
#      (train, test, checkpoint round trip, exact resume);
#   2. bench/stage2_scaling.py on CUDA at C = 50 and 500 base classes: backbone, DPC over all classes, DPC over the
#      pairs' classes (time, saved activations, peak allocation);
#   3. bench/dpc_step.py on CUDA at ViT-B/16 size: whole DPC stage-2 steps (sampler, negatives) against the
#      backbone's, and their forward + backward + update on the same pairs.
# Writes OUT/<step>.json and OUT/<step>.log for each, OUT/gpu_check.json (all of it, with the environment) and
# prints a summary. Exit status: 0 when every step passed, 1 otherwise, 2 without CUDA.
#
#   bash bench/gpu_check.sh [OUT]                  # OUT defaults to gpu_check/ (or $OUT when set)
#   WHEELS=dir bash bench/gpu_check.sh             # first installs what is missing from wheels in dir (no index)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu_check}}
mkdir -p "$out"

if [ -n "${WHEELS:-}" ]; then
    python -m pip install -q --no-index --find-links "$WHEELS" -r requirements.txt 2>&1 | tail -3
    ls "$WHEELS"/dassl*.whl >/dev/null 2>&1 && python -m pip install -q --no-index --no-deps "$WHEELS"/dassl*.whl
fi
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "error: torch sees no CUDA device (or torch is missing); run this on a GPU machine" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/gpu.txt" 2>/dev/null

failed=0
step() {  # step NAME LIMIT_SECONDS COMMAND...: runs it, logs it, records its status and time
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    echo "== $name (at most ${limit} s): $*"
    timeout "$limit" "$@" > "$out/$name.log" 2>&1
    local rc=$?
    echo "{\"rc\": $rc, \"seconds\": $((SECONDS - t0))}" > "$out/$name.status.json"
    [ "$rc" -eq 0 ] || failed=1
    echo "   exit $rc after $((SECONDS - t0)) s; last lines of $out/$name.log:"
    tail -n 12 "$out/$name.log" | sed 's/^/   | /'
}

step cuda_paths 200 python bench/cuda_paths.py --size vit-b16 --json "$out/cuda_paths.json"
step stage2_scaling 150 python bench/stage2_scaling.py --device cuda --prec fp16 --classes 50 500 --direct-max 500 \
    --rounds 3 --json "$out/stage2_scaling.json" --png "$out/stage2_scaling.png"
step dpc_step 110 python bench/dpc_step.py --device cuda --size vit-b16 --prec fp16 --no-pil --steps 3 --rounds 2 \
    --pairs 8 --json "$out/dpc_step.json"

python - "$out" <<'EOF'
import json, os, sys, torch
out = sys.argv[1]
report = {"gpu": open(os.path.join(out, "gpu.txt")).read().strip() if os.path.exists(os.path.join(out, "gpu.txt")) else None,
          "torch": torch.__version__, "cuda": torch.version.cuda, "steps": {}}
for name in ("cuda_paths", "stage2_scaling", "dpc_step"):
    entry = {}
    for suffix, key in ((".status.json", "status"), (".json", "figures")):
        path = os.path.join(out, name + suffix)
        if os.path.exists(path):
            with open(path) as f:
                entry[key] = json.load(f)
    report["steps"][name] = entry
with open(os.path.join(out, "gpu_check.json"), "w") as f:
    json.dump(report, f, indent=2)
print(f"\n{report['gpu']}, torch {report['torch']}, CUDA {report['cuda']}")
for name, entry in report["steps"].items():
    status = entry.get("status", {})
    print(f"{name:<15} exit {status.get('rc', '?')}  {status.get('seconds', '?')} s")
print(f"everything: {os.path.join(out, 'gpu_check.json')}")
EOF
exit $failed
