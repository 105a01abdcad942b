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

echo
echo "== Equivariant Encryption: the worker sees only permuted ids =="
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$EESCHED" --log-level warn keygen --model "$MODEL" --out "$work/client.eekey"
"$EESCHED" --log-level warn encrypt-model --model "$MODEL" --key "$work/client.eekey" --out "$work/target.enc" --threads "$THREADS"
echo "encrypted model directory: $(ls "$work/target.enc" | paste -sd' ') (no tokenizer, no key)"
prompt="Fellow-Citizens of the Senate and House of Representatives:"
echo "prompt: $prompt"
echo "plaintext model : $("$EESCHED" --log-level warn generate --model "$MODEL" --prompt "$prompt" --max-new-tokens 24 --threads "$THREADS")"
echo "encrypted model : $("$EESCHED" --log-level warn generate --model "$work/target.enc" --key "$work/client.eekey" \
  --tokenizer "$MODEL/tokenizer.model" --prompt "$prompt" --max-new-tokens 24 --threads "$THREADS" --show-wire 2>"$work/wire.txt")"
sed 's/^/  /' "$work/wire.txt" | cut -c1-150
