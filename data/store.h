#pragma once
// The performance store: one SQLite file (WAL mode, so the coordinator, workers and the sweep
// can write it at once) holding models, workers, tasks and runs. The schema is versioned;
// opening an older file upgrades it in code, a newer one is refused.
//
// Conventions: the row types are data/rows.h; timestamps are ISO-8601 UTC text with
// milliseconds (data/time.h, sortable as text); every write is one transaction; every failure is
// a data::Error naming the file.
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "data/retention.h"
#include "data/rows.h"
#include "data/sqlite.h"

namespace eesched::data {

// An arm's latency on a case, from the latencies of its repeated runs: the fastest. On a shared
// machine interference (other tenants, page faults, frequency dips) only ever adds delay, and it
// comes in bursts that can slow several repeats in a row, which a median then reports; the
// minimum estimates the undisturbed time (Chen & Revels, "Robust benchmarking in noisy
// environments", 2016). The oracle, the selector's labels, replay and db stats all use this.
double arm_latency_ms(const std::vector<double>& runs_ms);

// One row of the task x arm matrix: the latency (arm_latency_ms) of the ok runs of each measured arm.
struct LatencyRow {
  TaskRow task;
  std::map<std::string, double> latency_ms;  // arm -> ms; empty when nothing ran ok
};

struct ArmSummary {
  std::string arm;
  int64_t runs = 0, ok_runs = 0;
  std::optional<double> mean_latency_ms;     // over ok runs
  int64_t wins = 0;                          // tasks where its latency is the least (ties: all tied arms win)
  std::optional<double> mean_speedup_vs_kv;  // mean over shared tasks of latency(kv) / latency(arm)
};

// How often two single rounds of the sweep name the same fastest arm of a (task, worker) case:
// round 0 against round 1, an arm raced out after round 0 keeping its round-0 time. Measurement
// noise alone caps the top-1 accuracy of any policy scored against one round near this rate.
struct RoundAgreement {
  int64_t cases = 0;     // cases with two or more ok arms and a second round
  int64_t agreeing = 0;  // of those, where both rounds' fastest arm is the same
};

struct StoreCounts {
  int64_t tasks = 0, runs = 0, models = 0, workers = 0;
};

// Tasks whose row still holds encrypted ids (prompt, stop or answer ids; data/retention.h).
struct IdCounts {
  int64_t holding = 0;     // all of them
  int64_t unfinished = 0;  // of those, pending or running (a coordinator needs these)
  int64_t ended = 0;       // of those, done, failed or cancelled (what a purge wipes)
};

class Store {
 public:
  // Opens or creates the store, upgrading an older schema; refuses a newer one.
  static Store open(const std::filesystem::path& path);
  static int code_schema_version();  // the schema this build writes
  int schema_version();              // the file's schema version (== code_schema_version() once open)
  const std::string& path() const { return db_.path(); }

  int64_t upsert_model(const ModelRow& m);    // by fingerprint; updates the other fields; returns id
  int64_t upsert_worker(const WorkerRow& w);  // by name; updates the profile; returns id
  std::vector<ModelRow> models();             // all, by id
  std::vector<WorkerRow> workers();           // all, by id

  int64_t insert_task(const TaskRow& t);  // returns id; throws if ext_id exists
  std::optional<TaskRow> find_task_by_ext_id(const std::string& ext_id);
  void set_task_status(int64_t task_id, TaskStatus status);  // throws if no such task
  std::vector<TaskRow> tasks_with_status(TaskStatus status);  // by id
  // Sets the final status and how the task ended (no run: failed before any, or cancelled).
  void finish_task(int64_t task_id, TaskStatus status, const TaskOutcome& outcome);
  // The same and the run that produced it, in one transaction (a crash keeps both or neither).
  // Returns insert_run()'s answer; records the run's id as outcome.run_id.
  bool finish_task_with_run(int64_t task_id, TaskStatus status, TaskOutcome outcome, const RunRow& run);
  // The id of the run recorded under r's unique key (task, worker, arm, policy, repeat), if any.
  std::optional<int64_t> run_id(const RunRow& r);
  std::optional<RunRow> find_run(int64_t id);

  // False, writing nothing, when (task, worker, arm, policy, repeat_index) is already recorded:
  // a resumed sweep simply retries everything. Other failures (unknown task, a code_version
  // below 1) throw. The run's code_version is written as given.
  bool insert_run(const RunRow& r);
  bool has_run(int64_t task_id, std::optional<int64_t> worker_id, const std::string& arm, const std::string& policy,
               int64_t repeat_index);
  // The recorded latency (ms) of that run, failed or not; nullopt when it is not recorded.
  std::optional<double> run_latency(int64_t task_id, std::optional<int64_t> worker_id, const std::string& arm,
                                    const std::string& policy, int64_t repeat_index);
  // Deletes every run (any policy) of these arms, on one worker or all, of every task or only the
  // tasks of models named `model_name`; returns how many. A kernel change makes an arm's history
  // stale, and a re-sweep of one model's cases must start from none of their old runs: a resumed
  // sweep then measures them afresh.
  int64_t forget_runs(const std::vector<std::string>& arms, std::optional<int64_t> worker_id = std::nullopt,
                      const std::optional<std::string>& model_name = std::nullopt);
  std::vector<RunRow> runs_since(const std::string& since_iso_utc);  // started_at >= since, by start time

  // Every task (by id) with its arm -> latency of its ok runs; only runs of `worker_id` when given.
  std::vector<LatencyRow> latency_matrix(std::optional<int64_t> worker_id = std::nullopt);
  // One summary per arm that has runs, by arm name; only runs of `worker_id` when given.
  std::vector<ArmSummary> arm_summaries(std::optional<int64_t> worker_id = std::nullopt);
  RoundAgreement round_agreement();  // over the sweep's runs
  StoreCounts counts();
  // How many runs each code version (data/code_version.h) recorded: version -> runs, only the
  // versions that have any; 1 holds the runs recorded before runs carried a version.
  std::map<int64_t, int64_t> runs_by_code_version();
  // The landmark feature: mean acceptance rate of the ok speculative runs of this target with
  // this separate draft (specK arms), or with no draft_model_id, of its self-drafting runs
  // (qspecK: the draft is its own int8 copy); nullopt before any.
  std::optional<double> mean_acceptance(int64_t model_id, std::optional<int64_t> draft_model_id);

  // Retention of encrypted ids (data/retention.h). Not `all`: SQLite's secure_delete is on for this
  // connection (what a write frees is zeroed in the file); `none`: every task that ends (finish_task*)
  // has its prompt, stop and answer ids wiped in the same write. Default: all.
  void set_retention(const Retention& r);
  const Retention& retention() const { return retention_; }
  // Wipes the ids of tasks that ended (done, failed, cancelled) before `ended_before` (their
  // updated_at, ISO-8601 UTC), or of every ended task when nullopt, `batch` rows per transaction so
  // other writers wait briefly; returns how many rows held ids. Unfinished tasks keep theirs.
  int64_t purge_ids(const std::optional<std::string>& ended_before, int64_t batch = 256);
  // Checkpoints the write-ahead log into the file and truncates it to zero bytes, so pages that
  // held wiped ids do not linger in it; false when a reader kept it from completing.
  bool truncate_wal();
  // Rebuilds the file (VACUUM): free pages and free space inside pages, which may hold bytes of
  // rows written before secure_delete was on, are gone. Offline use: it rewrites the whole file.
  void vacuum();
  IdCounts id_counts();

 private:
  explicit Store(sql::Database db) : db_(std::move(db)) {}
  bool insert_run_in(const RunRow& r);  // insert_run() inside the caller's transaction
  void finish_task_in(int64_t task_id, TaskStatus status, const TaskOutcome& outcome);
  sql::Database db_;
  Retention retention_;
};

}  // namespace eesched::data
