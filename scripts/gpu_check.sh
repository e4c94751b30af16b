#!/usr/bin/env bash
# The GPU paths, end to end, on a CUDA machine: paper cells on Cora, bf16, a kill-and-resume on
# CUDA, and one Pokec-size synthetic mini-batch epoch. Prints one line per check; the run
# directories go to $OUT_DIR (default outputs/gpu-check).
#   DIFFORMER_DATA=/path/to/data bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT_DIR=${OUT_DIR:-outputs/gpu-check}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1
common=(trainer.device=cuda trainer.progress=false)

summary() {  # dir label: one line with the test mean, std and wall time
  "$PY" - "$1" "$2" <<'EOF'
import json, sys
s = json.load(open(f"{sys.argv[1]}/summary.json"))
scale = 100 if s["metric"] != "mse" else 1
std = s["test_std"] if s["test_std"] is not None else float("nan")
print(f"{sys.argv[2]}: {s['metric']} {scale * s['test_mean']:.2f} ± {scale * std:.2f} over "
      f"{s['n_runs']} run(s), {s['wall_seconds']:.1f} s wall, device {s['device']}")
EOF
}

"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"

for model in difformer_s difformer_a; do
  "$PY" train.py dataset=cora model=$model "${common[@]}" hydra.run.dir="$OUT_DIR/cora_$model" \
    > "$OUT_DIR/cora_$model.log" 2>&1 && summary "$OUT_DIR/cora_$model" "Cora $model paper cell (fp32)"
done

"$PY" train.py dataset=cora model=difformer_s trainer.precision=bf16 "${common[@]}" \
  hydra.run.dir="$OUT_DIR/cora_bf16" > "$OUT_DIR/cora_bf16.log" 2>&1 \
  && summary "$OUT_DIR/cora_bf16" "Cora difformer_s paper cell (bf16 autocast)"

# kill-and-resume on CUDA: SIGTERM in run 1, rerun, compare with an uninterrupted run
args=(dataset=cora model=difformer_s trainer.runs=3 trainer.epochs=200 "${common[@]}")
"$PY" train.py "${args[@]}" hydra.run.dir="$OUT_DIR/resume_ref" > "$OUT_DIR/resume_ref.log" 2>&1
"$PY" train.py "${args[@]}" hydra.run.dir="$OUT_DIR/resume" > "$OUT_DIR/resume.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  sleep 0.1
  grep -q '"run": 1, "epoch": 20' "$OUT_DIR/resume/metrics.jsonl" 2>/dev/null && break
done
kill -TERM $pid; wait $pid; echo "SIGTERM exit code: $?"
"$PY" train.py "${args[@]}" hydra.run.dir="$OUT_DIR/resume" >> "$OUT_DIR/resume.log" 2>&1
"$PY" - "$OUT_DIR" <<'EOF'
import json, sys
drop = ("seconds", "checkpoint", "wall_seconds", "run_dir")
a, b = (json.load(open(f"{sys.argv[1]}/{d}/summary.json")) for d in ("resume", "resume_ref"))
same = [{k: v for k, v in r.items() if k not in drop} for r in a["runs"]] == \
       [{k: v for k, v in r.items() if k not in drop} for r in b["runs"]]
print(f"CUDA kill-and-resume equals the uninterrupted run: {same} "
      f"(test {a['test_mean']:.6f} vs {b['test_mean']:.6f})")
EOF

# the paper's Pokec pair on a Pokec-size synthetic graph: one mini-batch epoch + evaluation
"$PY" train.py dataset=synthetic model=difformer_s trainer=minibatch trainer.batch_size=100000 \
  trainer.epochs=2 trainer.runs=1 trainer.eval_chunk=200000 model.hidden_channels=128 \
  model.num_layers=3 model.use_weight=true optim.weight_decay=0 "${common[@]}" \
  hydra.run.dir="$OUT_DIR/synthetic" > "$OUT_DIR/synthetic.log" 2>&1 \
  && summary "$OUT_DIR/synthetic" "Pokec-size synthetic, B=100000, 2 epochs" \
  && "$PY" -c "
import json; rows = [json.loads(l) for l in open('$OUT_DIR/synthetic/metrics.jsonl')]
print('synthetic epochs (s):', [round(r['seconds'], 2) for r in rows],
      'peak GPU MiB:', round(max(r['peak_memory_mb'] for r in rows)))"
tail -n 3 "$OUT_DIR"/*.log | grep -i "error" || true
