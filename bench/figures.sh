#!/usr/bin/env bash
# Reproduces every figure in the README's "Measured figures" section, on this machine.
# Usage: bash bench/figures.sh [build/eesched]   (run on an otherwise idle machine)
set -euo pipefail
EESCHED=${1:-build/eesched}
work=${EESCHED_BENCH_DIR:-$(mktemp -d)}
echo "# eesched figures, $(date -u +%Y-%m-%d), $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p')"

[ -d "$work/syn110m" ] || "$EESCHED" make-synthetic --preset 110m --seed 0 --out "$work/syn110m" >/dev/null
[ -f "$work/key.eekey" ] || "$EESCHED" --log-level warn keygen --model models/target --out "$work/key.eekey" >/dev/null
[ -f "$work/key32k.eekey" ] || "$EESCHED" --log-level warn keygen --model "$work/syn110m" --out "$work/key32k.eekey" >/dev/null

echo
echo "## bench-decode (batch 1, f32)"
for model in models/target "$work/syn110m"; do
  for t in 1 2; do
    echo "\$ eesched bench-decode --model $(basename "$model") --threads $t"
    "$EESCHED" --log-level warn bench-decode --model "$model" --threads "$t" --tokens 64
  done
done

echo
echo "## bench-ee (plaintext vs encrypted decoding, alternated)"
"$EESCHED" --log-level warn bench-ee --model models/target --key "$work/key.eekey" --tokens 256 --pairs 10 --threads 2
"$EESCHED" --log-level warn bench-ee --model "$work/syn110m" --key "$work/key32k.eekey" --tokens 48 --pairs 6 --threads 2

echo
echo "## encrypt-model transform time"
rm -rf "$work/target.enc" "$work/syn110m.enc"
"$EESCHED" --log-level warn encrypt-model --model models/target --key "$work/key.eekey" --out "$work/target.enc" --threads 2
"$EESCHED" --log-level warn encrypt-model --model "$work/syn110m" --key "$work/key32k.eekey" --out "$work/syn110m.enc" --threads 2

echo
echo "## bench-arms (every arm side by side; perplexity on Moby Dick)"
for t in 1 2; do
  "$EESCHED" --log-level warn bench-arms --model models/target --draft models/draft --threads "$t" --repeats 5
done
# No draft exists for the synthetic model (a random draft would accept nothing), and `plain`
# recomputes the whole sequence per token: speculative and plain rows are left out there.
for t in 1 2; do
  "$EESCHED" --log-level warn bench-arms --model "$work/syn110m" --arms kv,kv+int8,kv+prune30,kv+int8+prune30 \
    --tokenizer models/target/tokenizer.model --tokens 32 --repeats 3 --ppl-tokens 1024 --threads "$t"
done

echo
echo "## measure-quality (lossy transforms of models/target: pruning by weight norms, then by activations)"
"$EESCHED" --log-level warn measure-quality --model models/target --prune-scores weights --threads 2
"$EESCHED" --log-level warn measure-quality --model models/target --threads 2

echo
echo "## train-selector cross-validation and replay (the placement code path, quality floor applied)"
cp models/selector.json "$work/selector.json"
"$EESCHED" --log-level warn train-selector --db data/history/dev.db --out "$work/selector.json" --cv 5 --cv-repeats 10
"$EESCHED" --log-level warn replay --db data/history/dev.db --selector models/selector.json

echo
echo "## bench-dispatch (coordinator alone: 16 dry-run workers, in-process, loopback)"
for t in 1 2; do
  "$EESCHED" --log-level warn bench-dispatch --workers 16 --tasks 20000 --threads "$t"
done
