#!/usr/bin/env bash
# The main job, end to end: generate text with the demo model we trained ourselves.
# (Later issues grow this into the coordinator/worker demo over encrypted models.)
set -euo pipefail
EESCHED=${1:-build/eesched}
MODEL=models/target
THREADS=${THREADS:-$(nproc)}

echo "== eesched demo: $MODEL =="
grep -E '"(num_hidden_layers|hidden_size|num_attention_heads|num_key_value_heads|vocab_size)"' "$MODEL/config.json" | tr -d ' ,' | paste -sd' '
for prompt in "Fellow-Citizens of the Senate and House of Representatives:" \
              "The state of the Union is" \
              "Our economy" ; do
  echo
  echo "prompt: $prompt"
  "$EESCHED" --log-level warn generate --model "$MODEL" --prompt "$prompt" --max-new-tokens 48 --threads "$THREADS"
done

echo
echo "== sampled (temperature 0.8, top-p 0.95, seed 42) =="
echo "prompt: In the coming year"
"$EESCHED" --log-level warn generate --model "$MODEL" --prompt "In the coming year" --max-new-tokens 48 \
  --temperature 0.8 --top-p 0.95 --seed 42 --threads "$THREADS"

echo
echo "== KV cache vs full recompute (the plain baseline): same tokens, different speed =="
for mode in "" "--no-kv-cache"; do
  echo "${mode:---kv-cache (default)}:"
  "$EESCHED" generate --model "$MODEL" --prompt "The Congress" --max-new-tokens 128 --ignore-eos \
    --threads "$THREADS" $mode 2>&1 | sed 's/^/  /' | cut -c1-160
done
