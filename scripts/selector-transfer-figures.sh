#!/usr/bin/env bash
# The selector's figures on machines it never saw (README, "On a machine the selector never
# saw"), from the shipped histories:
#
#  - data/history/dev.db: 240 tasks on VM A at 2 and 1 threads, code version 1 (kernels older
#    than today's).
#  - data/history/vm-b.db: the 48 held-out tasks of data/tasks/heldout.jsonl and the 24 tasks of
#    data/tasks/presets.jsonl (llama3.2-1b and qwen2.5-0.5b in bf16) on VM B at 2 and 1 threads,
#    code version 2 (today's kernels).
#  - data/history/vm-b-hog.db: the same tasks on VM B at 1 thread with a memory-bandwidth hog
#    (a 256 MiB memcpy loop) on the other core, code version 2.
#
# 1. A -> B: the issue's test. A selector trained on VM A alone (--all-code-versions: A's runs
#    are older code) replays B's tasks, against the roofline model and knn fitted on A; the
#    design before this issue (one model, every feature, no risk) beside it.
# 2. Leave one machine out over today's three profiles: each scored by selectors trained on the
#    other two (task folds within), as the shipped selector would be on a fourth.
# 3. Online: from A's selector, 200 tasks drawn from B's cases streamed through the
#    coordinator's learning loop; and B's cases in time order. Then from a selector trained on
#    VM B at 2 and 1 threads, 200 tasks drawn from the hog profile's cases.
# 4. A family never trained on: a selector trained on B and the hog profile without the
#    presets' runs replays the presets' cases (llama3 and qwen2 architectures, bf16).
#
# Usage: scripts/selector-transfer-figures.sh [eesched binary]. Environment: OUT (work dir).
set -euo pipefail
EESCHED=$(realpath "${1:-build/eesched}")
cd "$(dirname "$0")/.."
OUT=${OUT:-build/selector-transfer}
mkdir -p "$OUT"
ee() { "$EESCHED" --log-level warn "$@"; }
# Opening a store upgrades its schema in place: work on copies, never on the tracked files.
for db in dev vm-b vm-b-hog; do cp "data/history/$db.db" "$OUT/$db.db"; done
A=$OUT/dev.db B=$OUT/vm-b.db C=$OUT/vm-b-hog.db

echo "## 1. Trained on VM A, replayed on VM B"
ee train-selector --db "$A" --out "$OUT/sel-a.json" --cv 0 --all-code-versions > /dev/null
ee train-selector --db "$A" --out "$OUT/sel-a-before.json" --cv 0 --all-code-versions --members 1 --risk 0 --machine-features > /dev/null
ee replay --train-db "$A" --test-db "$B" --selector "$OUT/sel-a.json" --policies meta,single-best,oracle,roofline,knn --explain 12
echo "### the same selector at risk 1 (the default before)"
ee replay --train-db "$A" --test-db "$B" --selector "$OUT/sel-a.json" --policies meta --risk 1 --no-slices
echo "### the design before (one model, every feature, no risk)"
ee replay --train-db "$A" --test-db "$B" --selector "$OUT/sel-a-before.json" --policies meta --no-slices

echo "## 2. Leave one machine out over today's profiles"
ee train-selector --db "$B" --db "$C" --out "$OUT/sel-bc.json" --cv 5 --cv-by machine --no-slices --explain 12
for seed in 2 3; do
  echo "### fold seed $seed"
  ee train-selector --db "$B" --db "$C" --out "$OUT/sel-bc-$seed.json" --cv 5 --cv-by machine --no-slices --seed "$seed" | grep -A2 '^  policy'
done
echo "### at risk 1 (the default before), fold seeds 1-3"
for seed in 1 2 3; do
  ee train-selector --db "$B" --db "$C" --out "$OUT/sel-bc-r1.json" --cv 5 --cv-by machine --no-slices --seed "$seed" --risk 1 | grep -A2 '^  policy'
done

echo "## 3. Online, from A's selector"
ee replay --online --train-db "$A" --test-db "$B" --selector "$OUT/sel-a.json" --stream 200 --resample
ee replay --online --train-db "$A" --test-db "$B" --selector "$OUT/sel-a.json" --stream 200
echo "### from B's selector, on the hog profile"
ee train-selector --db "$B" --out "$OUT/sel-b.json" --cv 0 > /dev/null
ee replay --online --train-db "$B" --test-db "$C" --selector "$OUT/sel-b.json" --stream 200 --resample

echo "## 4. The real-family presets, never trained on"
cp "$B" "$OUT/vm-b-no-presets.db"
for m in llama3.2-1b qwen2.5-0.5b; do ee db forget --db "$OUT/vm-b-no-presets.db" --model "$m" > /dev/null; done
ee train-selector --db "$OUT/vm-b-no-presets.db" --db "$C" --out "$OUT/sel-no-presets.json" --cv 0 > /dev/null
cp "$B" "$OUT/vm-b-presets.db"
for m in target syn25m syn110m; do ee db forget --db "$OUT/vm-b-presets.db" --model "$m" > /dev/null; done
ee replay --train-db "$OUT/vm-b-no-presets.db" --test-db "$OUT/vm-b-presets.db" --selector "$OUT/sel-no-presets.json" \
  --policies meta,single-best,oracle,roofline,knn
