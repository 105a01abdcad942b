#pragma once
// The plain records of tasks, models, workers and runs: what the store keeps, the wire carries
// (net/messages.h) and the scheduler reads. No SQLite here: code that passes rows around does not
// pull in the store.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "data/code_version.h"
#include "data/hardware.h"
#include "data/quality.h"
#include "data/task.h"
#include "data/time.h"

namespace eesched::data {

enum class TaskStatus { Pending, Running, Done, Failed, Cancelled };
const char* task_status_name(TaskStatus s);             // "pending", "running", ...
TaskStatus parse_task_status(const std::string& name);  // throws data::Error

struct ModelRow {
  int64_t id = 0;           // set by the store
  std::string name;
  std::string fingerprint;  // identity: same weights (plaintext or encrypted) -> same fingerprint
  std::string architecture = "llama";  // config.json's model_type: llama, mistral, qwen2, qwen3
  int64_t layers = 0, hidden = 0, intermediate = 0, heads = 0, kv_heads = 0, vocab = 0;
  int64_t head_dim = 0;     // attention head width when the config names one; 0: hidden / heads
  int64_t parameters = 0;
  int64_t weight_bytes = 0;
  std::string dtype;        // "f32", "f16", "bf16"
  bool encrypted = false;
  QualityTable quality;     // measured quality of its lossy transforms (data/quality.h); empty: none measured

  bool operator==(const ModelRow&) const = default;
};

// A worker is a name on a hardware profile: the profile's fields are its columns.
struct WorkerRow {
  int64_t id = 0;    // set by the store
  std::string name;  // identity
  HardwareProfile hardware;
};
WorkerRow worker_row(const std::string& name, const HardwareProfile& hw);

// How a finished task ended, as the coordinator answered it: kept as data (columns), so the
// answer to a client that reattaches is rebuilt from it, whatever the protocol version.
struct TaskOutcome {
  std::vector<std::vector<int64_t>> tokens;  // ENCRYPTED new ids per batch row; empty unless done
  std::string error;                         // why it failed or was cancelled
  std::string worker, arm;                   // of the last attempt; empty if none started
  bool explored = false;
  int64_t attempts = 0;
  double predicted_ms = 0;
  std::optional<double> ppl_ratio;           // the arm's measured perplexity ratio (lossy arms)
  std::optional<int64_t> run_id;             // the run that answered: its measurements

  bool operator==(const TaskOutcome&) const = default;
};

struct TaskRow {
  int64_t id = 0;      // set by the store
  std::string ext_id;  // the suite's or the client's id; unique
  int64_t model_id = 0;
  std::optional<int64_t> draft_model_id;
  int64_t prompt_tokens = 0, batch = 1;
  GenerationParams generation;                   // as the task asked; stop ids as the model sees them
  Quality quality = Quality::Exact;
  double max_ppl_ratio = kDefaultMaxPplRatio;    // the tolerant bound (data/quality.h)
  std::vector<std::vector<int64_t>> prompt_ids;  // ENCRYPTED prompt ids, one list per batch row; never plaintext
  std::string features;                          // JSON text from the feature module; may be empty
  TaskStatus status = TaskStatus::Pending;
  std::string created_at, updated_at;            // set by the store when empty
  // A client's task (submitted to a coordinator, which re-queues it after a restart): the key
  // its ids are encrypted under and the arm it pinned, if any. Suites' and workers' logs are not.
  bool from_client = false;
  std::string key_fingerprint;
  std::string pinned_arm;
  TaskOutcome outcome;  // once finished

  bool operator==(const TaskRow&) const = default;
};
// A task row for `spec` (its prompt text is not stored: only the encrypted ids are).
TaskRow task_row(const TaskSpec& spec, int64_t model_id, std::optional<int64_t> draft_model_id = std::nullopt);

// The task spec of a stored row (lengths, sampling, quality; the prompt text is never stored).
TaskSpec task_spec(const TaskRow& row);

// What one run measured: what the worker reports, the sweep records and the store keeps.
struct RunMeasurement {
  bool ok = false;
  std::string error;          // why not ok: "timeout after N ms", or the exception's message
  std::string started_at, ended_at;  // iso_utc()
  double latency_ms = 0;      // whole request: prefill and every decoding step, the whole batch
  double ttft_ms = 0;
  double ms_per_token = 0;    // decoding, after the first token
  double tokens_per_s = 0;    // new tokens (summed over the batch) / latency
  int64_t new_tokens = 0;
  int64_t peak_rss_bytes = 0; // the process's peak resident set so far
  std::optional<double> acceptance_rate;  // speculative arms only

  bool operator==(const RunMeasurement&) const = default;
};

struct RunRow {
  int64_t id = 0;  // set by the store
  int64_t task_id = 0;
  std::optional<int64_t> worker_id;  // none: measured outside any registered worker
  std::string arm;                   // canonical arm name (data/arm.h)
  std::string policy;                // who chose the arm: "sweep", "selector", "random", ...
  bool explored = false;             // chosen to explore rather than by the policy's best guess
  int64_t repeat_index = 0;
  std::string started_at, ended_at;  // iso_utc()
  double latency_ms = 0, ttft_ms = 0, ms_per_token = 0, tokens_per_s = 0;
  int64_t new_tokens = 0, peak_rss_bytes = 0;
  std::optional<double> acceptance_rate;  // speculative arms only
  std::optional<double> quality;          // e.g. perplexity ratio vs the plain model; lossy arms
  bool ok = true;
  std::string error;  // why the run failed, when !ok
  int64_t code_version = kCodeVersion;  // the code that measured it (data/code_version.h); 1: before runs carried one
};

// The store row of a measured run (missing timestamps: now).
RunRow run_row(const RunMeasurement& m, int64_t task_id, std::optional<int64_t> worker_id, const std::string& arm,
               const std::string& policy, int64_t repeat_index);

}  // namespace eesched::data
