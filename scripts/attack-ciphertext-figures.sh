#!/usr/bin/env bash
# The ciphertext-only attack's figures (docs/ee.md, "Ciphertext-only attack"): what an observer
# of N = 1, 10, 100, 1000 encrypted requests recovers, with and without the encrypted model.
#
#  - models/target (SentencePiece, 1024 ids): the clients' prompts are 48-token pieces of the
#    last MB of corpus/sotu.txt, encrypted with a fresh key and answered (32 tokens at most,
#    temperature 0.8) by the encrypted model; the attacker's public text is the part of
#    sotu.txt before that MB (disjoint), read up to --corpus-bytes.
#  - the Llama-3 vocabulary (128,256 ids, the real tokenizer): prompts only (80-token pieces of
#    the same held-out text) and no model. A synthetic model with this vocabulary has random
#    weights, a meaningless language model in cipher space, and refinement needs a
#    vocabulary-squared table: the question there is only how frequency analysis fares with a
#    128K vocabulary. (keygen reads only config.json: a config stands in for the model.)
#
# Prints a markdown table. Usage: scripts/attack-ciphertext-figures.sh [eesched binary]
# Environment: OUT (work directory), TEXT, TOKENIZERS (llama3/ inside), NS, SEARCH (seconds of
# annealing per run), CORPUS_BYTES, LLAMA3_CORPUS_BYTES, SKIP_LLAMA3=1.
set -euo pipefail
EESCHED=$(realpath "${1:-build/eesched}")
cd "$(dirname "$0")/.."
OUT=${OUT:-build/attack-ciphertext}
TEXT=${TEXT:-corpus/sotu.txt}
TOKENIZERS=${TOKENIZERS:-tokenizers}
NS=${NS:-"1 10 100 1000"}
SEARCH=${SEARCH:-20}
CORPUS_BYTES=${CORPUS_BYTES:-2000000}
LLAMA3_CORPUS_BYTES=${LLAMA3_CORPUS_BYTES:-1000000}
[ -f "$TEXT" ] || { echo "no $TEXT: run tools/fetch-corpus.sh" >&2; exit 1; }
mkdir -p "$OUT"
ee() { "$EESCHED" --log-level warn "$@"; }

# Held-out requests: the last MB; the attacker's text: everything before it.
size=$(wc -c < "$TEXT")
held=1000000
head -c $((size - held)) "$TEXT" > "$OUT/public.txt"
tail -c $held "$TEXT" | tail -n +2 > "$OUT/held-out.txt"

rows=()
# run LABEL N TOKENIZER KEY OBSERVED CORPUS_BYTES [extra attack args...]: one table row
run() {
  local label=$1 n=$2 tok=$3 key=$4 obs=$5 bytes=$6
  shift 6
  local j
  j=$(ee attack ciphertext --observed "$obs" --requests "$n" --corpus "$OUT/public.txt" --corpus-bytes "$bytes" \
        --tokenizer "$tok" --key "$key" --search-seconds "$SEARCH" --json "$@")
  rows+=("$(jq -r --arg l "$label" '"| \($l) | \(.requests) | \(.observed_tokens) | \(if .model_used then "yes" else "no" end) | \(.tokens_recovered * 1000 | round / 10)% | \(.observed_vocab_recovered * 1000 | round / 10)% of \(.observed_distinct) | \(.vocab_recovered * 1000 | round / 10)% | \(.seconds | round) |"' <<< "$j")")
  echo "${rows[-1]}" >&2
}

# models/target
tok=models/target/tokenizer.model
key=$OUT/target.eekey
enc=$OUT/target-enc
[ -f "$key" ] || ee keygen --model models/target --out "$key" > /dev/null
[ -d "$enc" ] || ee encrypt-model --model models/target --key "$key" --out "$enc" > /dev/null
obs=$OUT/target-requests.jsonl
[ -f "$obs" ] || ee attack make-requests --encrypted "$enc" --key "$key" --tokenizer "$tok" --text "$OUT/held-out.txt" \
                   --requests 1000 --prompt-tokens 48 --max-new-tokens 32 --temperature 0.8 --out "$obs" >&2
for n in $NS; do
  run "models/target (1024)" "$n" "$tok" "$key" "$obs" "$CORPUS_BYTES"
  run "models/target (1024)" "$n" "$tok" "$key" "$obs" "$CORPUS_BYTES" --encrypted "$enc"
done

# The Llama-3 vocabulary
if [ "${SKIP_LLAMA3:-0}" != 1 ]; then
  l3=$OUT/llama3
  mkdir -p "$l3/config"
  cat > "$l3/config/config.json" <<'EOF'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256, "hidden_size": 2048,
 "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
 "head_dim": 64, "max_position_embeddings": 131072, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
 "bos_token_id": 128000, "eos_token_id": 128001, "hidden_act": "silu", "tie_word_embeddings": true}
EOF
  key3=$l3/llama3.eekey
  [ -f "$key3" ] || ee keygen --model "$l3/config" --out "$key3" > /dev/null
  obs3=$l3/requests.jsonl
  [ -f "$obs3" ] || ee attack make-requests --key "$key3" --tokenizer "$TOKENIZERS/llama3" --text "$OUT/held-out.txt" \
                      --text-bytes 600000 --requests 1000 --prompt-tokens 80 --max-new-tokens 0 --out "$obs3" >&2
  for n in $NS; do
    run "Llama-3 (128256)" "$n" "$TOKENIZERS/llama3" "$key3" "$obs3" "$LLAMA3_CORPUS_BYTES"
  done
fi

echo "| vocabulary | requests | observed tokens | encrypted model | tokens recovered | observed ids recovered | vocabulary recovered | s |"
echo "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |"
printf '%s\n' "${rows[@]}"
