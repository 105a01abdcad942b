#!/usr/bin/env bash
# The main job, end to end, on loopback: a coordinator and two workers (1 and 2 threads) serve the
# demo models encrypted under a fresh key; the client submits ~20 varied tasks, the shipped
# selector picks worker and arm for each, and only the client can read the answers. Then an
# application written against the OpenAI API (the official `openai` npm client) streams a chat
# answer through `eesched serve`, the gateway that holds the key, and its /metrics.
set -euo pipefail
EESCHED=${1:-build/eesched}
EESCHED=$(realpath "$EESCHED")
cd "$(dirname "$0")/.."

work=$(mktemp -d /tmp/eesched-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
ee() { "$EESCHED" --log-level warn "$@"; }
# wait_for LOG SED_EXPR WHAT: the first match of SED_EXPR in LOG once a daemon has written it
# (10 s at most), else the log and a one-line error.
wait_for() {
  local found=""
  for _ in $(seq 1 200); do
    found=$(sed -n "$2" "$1" | head -1)
    [ -n "$found" ] && { echo "$found"; return 0; }
    sleep 0.05
  done
  cat "$1" >&2
  echo "demo: $3 did not start" >&2
  exit 1
}

echo "== 1. the model owner: a fresh key, the demo models encrypted under it =="
ee keygen --model models/target --out "$work/client.eekey"
mkdir -p "$work/models"
ee encrypt-model --model models/target --key "$work/client.eekey" --out "$work/models/target"
ee encrypt-model --model models/draft --key "$work/client.eekey" --out "$work/models/draft"
echo "encrypted model directory: $(ls "$work/models/target" | paste -sd' ') (no tokenizer, no key)"
ee make-token --out "$work/worker.token" >/dev/null

echo
echo "== 2. the daemons: a coordinator with the shipped selector, two workers that never see a key =="
"$EESCHED" coordinator --listen 127.0.0.1:0 --db "$work/coordinator.db" --selector models/selector.json \
  --token-file "$work/worker.token" --metrics-listen 127.0.0.1:0 >"$work/coordinator.log" 2>&1 &
pids+=($!)
coord_pid=$!
port=$(wait_for "$work/coordinator.log" 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "the coordinator")
addr="127.0.0.1:$port"
echo "coordinator on $addr"
worker_pids=()
for threads in 1 2; do
  "$EESCHED" --log-level debug worker --coordinator "$addr" --model "target=$work/models/target" \
    --draft "$work/models/draft" --token-file "$work/worker.token" --threads "$threads" \
    --db "$work/worker-$threads.db" >"$work/worker-$threads.log" 2>&1 &
  pids+=($!)
  worker_pids+=($!)
done
for _ in $(seq 1 400); do
  [ "$(grep -c 'registered from' "$work/coordinator.log" || true)" -ge 2 ] && break
  sleep 0.05
done
grep 'registered from' "$work/coordinator.log" | sed 's/^.*\] /  /'

echo
echo "== 3. the client: 20 tasks, tokenized and encrypted here, decrypted here =="
prompts=(
  "Fellow-Citizens of the Senate and House of Representatives:"
  "The state of the Union is"
  "Our economy"
  "In the coming year"
  "The Congress"
  "We must"
  "I am happy to report that"
  "Our foreign relations"
  "The American people"
  "It is my duty"
)
specs=()  # max_new_tokens quality temperature
for i in $(seq 0 19); do
  case $((i % 5)) in
    0) specs+=("48 exact 0") ;;
    1) specs+=("16 tolerant 0") ;;
    2) specs+=("96 exact 0") ;;
    3) specs+=("32 exact 0.8") ;;
    4) specs+=("8 exact 0") ;;
  esac
done
submit() {
  local i=$1 tokens quality temperature
  read -r tokens quality temperature <<<"${specs[$i]}"
  "$EESCHED" --log-level info submit --coordinator "$addr" --key "$work/client.eekey" \
    --tokenizer models/target/tokenizer.model --model target --prompt "${prompts[$((i % 10))]}" \
    --max-new-tokens "$tokens" --quality "$quality" --temperature "$temperature" --seed "$i" \
    >"$work/out-$i.txt" 2>"$work/err-$i.txt"
}
start=$(date +%s%N)
for batch in 0 5 10 15; do  # five clients at a time
  clients=()
  for i in $(seq "$batch" $((batch + 4))); do submit "$i" & clients+=($!); done
  for c in "${clients[@]}"; do wait "$c" || true; done
done
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
printf '%-3s %-22s %-16s %9s %9s  %s\n' "#" "worker" "arm" "ppl ratio" "latency" "prompt -> decrypted answer"
for i in $(seq 0 19); do
  read -r tokens quality temperature <<<"${specs[$i]}"
  line=$(grep -o 'worker .*' "$work/err-$i.txt" | tail -1 || true)
  worker=$(echo "$line" | sed -n 's/worker \([^,]*\),.*/\1/p')
  arm=$(echo "$line" | sed -n 's/.*arm \([^ ,]*\).*/\1/p')
  latency=$(echo "$line" | sed -n 's/.* in \([0-9.]*\) ms.*/\1/p')
  # A lossy arm names the perplexity ratio its owner measured (the tolerant bound is 1.05).
  ratio=$(echo "$line" | sed -n 's/.*perplexity ratio \([0-9.]*\).*/\1/p')
  [ -n "$ratio" ] || ratio="lossless"
  if [ -z "$worker" ]; then
    echo "task $i failed:"; cat "$work/err-$i.txt"; exit 1
  fi
  text=$(tr '\n' ' ' <"$work/out-$i.txt" | cut -c1-70)
  printf '%-3s %-22s %-16s %9s %7s ms  [%s, %s tok, T=%s] %s -> %s\n' "$i" "$worker" "$arm" "$ratio" "$latency" "$quality" "$tokens" \
    "$temperature" "${prompts[$((i % 10))]}" "$text"
done
echo "20 tasks in $((elapsed_ms / 1000)).$(printf '%03d' $((elapsed_ms % 1000))) s"

echo
echo "== 4. what the workers saw: encrypted ids only =="
plain=$("$EESCHED" --log-level warn submit --coordinator "$addr" --key "$work/client.eekey" \
  --tokenizer models/target/tokenizer.model --model target --prompt "${prompts[0]}" --max-new-tokens 8 --json)
plain_ids=$(echo "$plain" | sed -n 's/.*"prompt_ids":\[\([0-9,]*\)\].*/\1/p')
echo "client's plaintext prompt ids : [${plain_ids}]"
echo "what the 1-thread worker logged (the last 3 tasks):"
grep -h 'prompt \[' "$work"/worker-1.log | tail -3 | sed 's/^.*\] task/  task/' | cut -c1-150
# The client's ids 2..6 in a row, as JSON (stores) and as the logs print them.
needles=("$(echo "$plain_ids" | cut -d, -f2-6)" "$(echo "$plain_ids" | cut -d, -f2-6 | tr , ' ')")
hits=0
for f in "$work"/worker-*.log "$work"/worker-*.db* "$work"/coordinator.log "$work"/coordinator.db*; do
  for n in "${needles[@]}"; do
    if grep -qaF "$n" "$f"; then hits=$((hits + 1)); echo "plaintext ids found in $f" >&2; fi
  done
done
echo "the client's plaintext id run [${needles[0]}] in the workers' and coordinator's logs and stores: $hits times"
[ "$hits" -eq 0 ]

echo
echo "== 5. an OpenAI application: the official openai client streams a chat answer through the gateway =="
if command -v node >/dev/null && bash tools/fetch-openai.sh >"$work/fetch-openai.log" 2>&1; then
  echo "demo-api-key" >"$work/api.key"
  "$EESCHED" serve --coordinator "$addr" --key "$work/client.eekey" --model "target=models/target" \
    --listen 127.0.0.1:0 --api-key-file "$work/api.key" >"$work/serve.log" 2>&1 &
  serve_pid=$!
  pids+=("$serve_pid")
  url=$(wait_for "$work/serve.log" 's/.*on \(http:\/\/127\.0\.0\.1:[0-9]*\).*/\1/p' "the gateway")
  echo "gateway on $url (holds the key; the coordinator and workers see encrypted ids only)"
  echo "user: Tell me about the state of our economy."
  node tests/openai/chat.mjs "$url/v1" demo-api-key target "Tell me about the state of our economy." 48
  echo "GET $url/health: $(curl -s "$url/health")"
  echo "the gateway's metrics (GET $url/metrics):"
  curl -s "$url/metrics" | grep -E '^eesched_gateway_(requests_total|prompt_tokens_total|generation_tokens_total|time_to_first_token_seconds_(sum|count)|e2e_request_latency_seconds_count)' | sed 's/^/  /'
  metrics_url=$(sed -n 's/.*metrics on \(http:[^ ]*\).*/\1/p' "$work/coordinator.log" | head -1)
  echo "the coordinator's metrics (GET $metrics_url):"
  curl -s "$metrics_url" | grep -E '^eesched_coordinator_(tasks_total|decisions_total|live_workers|reassignments_total|worker_slots)' | sed 's/^/  /'
  kill -TERM "$serve_pid"
  wait "$serve_pid" || { echo "demo: the gateway exited with an error" >&2; cat "$work/serve.log"; exit 1; }
else
  echo "skipped: node or the openai npm package is missing ($(tail -1 "$work/fetch-openai.log" 2>/dev/null)); scripts/setup.sh installs node"
fi

echo
echo "== 6. every run is logged for the selector to learn from =="
ee db stats --db "$work/coordinator.db" | sed 's/^/  /'

echo
echo "== 7. stop everything cleanly (SIGTERM: drain, then exit 0) =="
kill -TERM "${worker_pids[@]}" "$coord_pid"
status=0
for p in "${worker_pids[@]}" "$coord_pid"; do wait "$p" || status=$?; done
pids=()
[ "$status" -eq 0 ] || { echo "demo: a daemon exited with status $status" >&2; exit 1; }
echo "coordinator and workers exited with status 0"
