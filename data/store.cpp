#include "data/store.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <nlohmann/json.hpp>

#include "data/arm.h"
#include "data/error.h"

namespace eesched::data {
namespace {

// Forward migrations, applied in order inside one transaction. Never edit a step that has
// shipped: append the next version. Each step upgrades the previous version by one.
struct Migration {
  int version;
  const char* sql;
};

const Migration kMigrations[] = {
    {1, R"sql(
CREATE TABLE models (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  fingerprint TEXT NOT NULL UNIQUE,
  layers INTEGER NOT NULL, hidden INTEGER NOT NULL, intermediate INTEGER NOT NULL,
  heads INTEGER NOT NULL, kv_heads INTEGER NOT NULL, vocab INTEGER NOT NULL,
  parameters INTEGER NOT NULL, weight_bytes INTEGER NOT NULL,
  dtype TEXT NOT NULL, encrypted INTEGER NOT NULL);
CREATE TABLE workers (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  host TEXT NOT NULL, cpu_model TEXT NOT NULL, threads INTEGER NOT NULL,
  gflops REAL NOT NULL, copy_gbps REAL NOT NULL,
  mem_total_bytes INTEGER NOT NULL, mem_free_bytes INTEGER NOT NULL,
  measured_at TEXT NOT NULL);
CREATE TABLE tasks (
  id INTEGER PRIMARY KEY,
  ext_id TEXT NOT NULL UNIQUE,
  model_id INTEGER NOT NULL REFERENCES models(id),
  draft_model_id INTEGER REFERENCES models(id),
  prompt_tokens INTEGER NOT NULL, max_new_tokens INTEGER NOT NULL, batch INTEGER NOT NULL,
  temperature REAL NOT NULL, top_p REAL NOT NULL,
  quality TEXT NOT NULL CHECK (quality IN ('exact', 'tolerant')),
  prompt_ids TEXT NOT NULL DEFAULT '[]',
  features TEXT NOT NULL DEFAULT '',
  status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed', 'cancelled')),
  created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE runs (
  id INTEGER PRIMARY KEY,
  task_id INTEGER NOT NULL REFERENCES tasks(id),
  worker_id INTEGER REFERENCES workers(id),
  arm TEXT NOT NULL, policy TEXT NOT NULL,
  explored INTEGER NOT NULL, repeat_index INTEGER NOT NULL,
  started_at TEXT NOT NULL, ended_at TEXT NOT NULL,
  latency_ms REAL NOT NULL, ttft_ms REAL NOT NULL, ms_per_token REAL NOT NULL, tokens_per_s REAL NOT NULL,
  new_tokens INTEGER NOT NULL, peak_rss_bytes INTEGER NOT NULL,
  ok INTEGER NOT NULL, error TEXT NOT NULL DEFAULT '');
-- ifnull: NULLs are distinct in a UNIQUE index, and runs without a worker must dedupe too.
CREATE UNIQUE INDEX runs_unique ON runs(task_id, ifnull(worker_id, 0), arm, policy, repeat_index);
)sql"},
    // v2: quality measurements of lossy and speculative arms, and indexes for the "since" and
    // "pending tasks" queries the coordinator runs on every restart.
    {2, R"sql(
ALTER TABLE runs ADD COLUMN acceptance_rate REAL;
ALTER TABLE runs ADD COLUMN quality REAL;
CREATE INDEX runs_by_start ON runs(started_at);
CREATE INDEX tasks_by_status ON tasks(status);
)sql"},
    // v3: what the coordinator needs to re-dispatch a task after a restart and to answer a
    // client that reconnects: the rest of the request (encrypted stop ids, seed, key
    // fingerprint) and the (encrypted) result, both JSON text.
    {3, R"sql(
ALTER TABLE tasks ADD COLUMN request TEXT NOT NULL DEFAULT '{}';
ALTER TABLE tasks ADD COLUMN result TEXT NOT NULL DEFAULT '';
)sql"},
    // v4: quality floors that mean a bound. A model's measured quality per lossy transform (JSON,
    // data/quality.h) and a tolerant task's bound on it; tasks stored before keep the default.
    {4, R"sql(
ALTER TABLE models ADD COLUMN quality TEXT NOT NULL DEFAULT '{}';
ALTER TABLE tasks ADD COLUMN max_ppl_ratio REAL NOT NULL DEFAULT 1.05;
)sql"},
    // v5: models name their architecture and an explicit head width (real model families), and
    // the store keeps data, not frames. The rest of a client's request and the answer it got
    // (v3's JSON text) become columns, so an answer is rebuilt from data whatever the protocol
    // version; stored requests and answers are carried over.
    {5, R"sql(
ALTER TABLE models ADD COLUMN architecture TEXT NOT NULL DEFAULT 'llama';
ALTER TABLE models ADD COLUMN head_dim INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN top_k INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN seed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN stop_ids TEXT NOT NULL DEFAULT '[]';
ALTER TABLE tasks ADD COLUMN from_client INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN key_fingerprint TEXT NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN pinned_arm TEXT NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN answer_ids TEXT NOT NULL DEFAULT '[]';
ALTER TABLE tasks ADD COLUMN error TEXT NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN worker TEXT NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN arm TEXT NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN explored INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN predicted_ms REAL NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN ppl_ratio REAL;
ALTER TABLE tasks ADD COLUMN run_id INTEGER REFERENCES runs(id);
UPDATE tasks SET
  top_k = ifnull(json_extract(request, '$.top_k'), 0),
  seed = CAST(ifnull(json_extract(request, '$.seed'), 0) AS INTEGER),
  stop_ids = ifnull(json_extract(request, '$.stop_ids'), '[]'),
  from_client = json_extract(request, '$.model') IS NOT NULL,
  key_fingerprint = ifnull(json_extract(request, '$.key_fingerprint'), ''),
  pinned_arm = ifnull(json_extract(request, '$.arm'), '')
WHERE json_valid(request);
UPDATE tasks SET
  answer_ids = ifnull(json_extract(result, '$.report.tokens'), json_extract(result, '$.tokens')),
  error = ifnull(json_extract(result, '$.report.error'), ''),
  worker = ifnull(json_extract(result, '$.worker'), ''),
  arm = ifnull(json_extract(result, '$.arm'), ''),
  explored = ifnull(json_extract(result, '$.explored'), 0),
  attempts = ifnull(json_extract(result, '$.attempts'), 0),
  predicted_ms = ifnull(json_extract(result, '$.predicted_ms'), 0),
  ppl_ratio = json_extract(result, '$.ppl_ratio'),
  run_id = (SELECT max(r.id) FROM runs r WHERE r.task_id = tasks.id AND r.ok = 1)
WHERE result != '' AND json_valid(result);
UPDATE tasks SET answer_ids = '[]' WHERE answer_ids IS NULL;
ALTER TABLE tasks DROP COLUMN request;
ALTER TABLE tasks DROP COLUMN result;
)sql"},
    // v6: which generation of the execution code measured a run (data/code_version.h), so
    // training can keep to runs that describe the current code. Runs recorded before carried
    // none: version 1.
    {6, R"sql(
ALTER TABLE runs ADD COLUMN code_version INTEGER NOT NULL DEFAULT 1;
)sql"},
};

constexpr int kSchemaVersion = static_cast<int>(std::size(kMigrations));

// The file's version: 0 for an empty file; refuses a file that holds someone else's tables.
int read_version(sql::Database& db) {
  auto has = db.prepare("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'");
  has.step();
  if (has.column_int64(0) == 0) {
    auto other = db.prepare("SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'");
    other.step();
    if (other.column_int64(0) > 0) throw Error(db.path() + ": not an eesched store (it has tables but no schema_version)");
    return 0;
  }
  auto st = db.prepare("SELECT max(version), count(*) FROM schema_version");
  st.step();
  if (st.column_int64(1) != 1 || st.column_is_null(0)) throw Error(db.path() + ": schema_version must hold exactly one row");
  return static_cast<int>(st.column_int64(0));
}

void refuse_newer(const sql::Database& db, int version) {
  if (version > kSchemaVersion)
    throw Error(db.path() + ": schema version " + std::to_string(version) + " is newer than this eesched (" +
                std::to_string(kSchemaVersion) + "); upgrade eesched");
}

void migrate(sql::Database& db) {
  int version = read_version(db);
  refuse_newer(db, version);
  if (version == kSchemaVersion) return;
  sql::Transaction tx(db);
  version = read_version(db);  // another process may have upgraded while we waited for the lock
  refuse_newer(db, version);
  if (version == kSchemaVersion) return;
  if (version == 0) db.exec("CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (0);");
  for (const auto& m : kMigrations)
    if (m.version > version) db.exec(m.sql);
  db.prepare("UPDATE schema_version SET version = ?").bind_int64(1, kSchemaVersion).run();
  tx.commit();
}

void bind_opt(sql::Statement& st, int index, const std::optional<int64_t>& v) {
  if (v)
    st.bind_int64(index, *v);
  else
    st.bind_null(index);
}

void bind_opt(sql::Statement& st, int index, const std::optional<double>& v) {
  if (v)
    st.bind_double(index, *v);
  else
    st.bind_null(index);
}

std::optional<int64_t> opt_int64(const sql::Statement& st, int col) {
  return st.column_is_null(col) ? std::nullopt : std::optional<int64_t>(st.column_int64(col));
}

std::optional<double> opt_double(const sql::Statement& st, int col) {
  return st.column_is_null(col) ? std::nullopt : std::optional<double>(st.column_double(col));
}

constexpr const char* kModelCols =
    "id, name, fingerprint, layers, hidden, intermediate, heads, kv_heads, vocab, parameters, weight_bytes, dtype, encrypted, "
    "quality, architecture, head_dim";
constexpr const char* kWorkerCols =
    "id, name, host, cpu_model, threads, gflops, copy_gbps, mem_total_bytes, mem_free_bytes, measured_at";
constexpr const char* kTaskCols =
    "id, ext_id, model_id, draft_model_id, prompt_tokens, max_new_tokens, batch, temperature, top_p, quality, prompt_ids, "
    "features, status, created_at, updated_at, max_ppl_ratio, top_k, seed, stop_ids, from_client, key_fingerprint, "
    "pinned_arm, answer_ids, error, worker, arm, explored, attempts, predicted_ms, ppl_ratio, run_id";
constexpr const char* kRunCols =
    "id, task_id, worker_id, arm, policy, explored, repeat_index, started_at, ended_at, latency_ms, ttft_ms, ms_per_token, "
    "tokens_per_s, new_tokens, peak_rss_bytes, acceptance_rate, quality, ok, error, code_version";

ModelRow read_model(const sql::Statement& st) {
  ModelRow m;
  m.id = st.column_int64(0);
  m.name = st.column_text(1);
  m.fingerprint = st.column_text(2);
  m.layers = st.column_int64(3);
  m.hidden = st.column_int64(4);
  m.intermediate = st.column_int64(5);
  m.heads = st.column_int64(6);
  m.kv_heads = st.column_int64(7);
  m.vocab = st.column_int64(8);
  m.parameters = st.column_int64(9);
  m.weight_bytes = st.column_int64(10);
  m.dtype = st.column_text(11);
  m.encrypted = st.column_int64(12) != 0;
  try {
    m.quality = quality_from_json(nlohmann::json::parse(st.column_text(13)));
  } catch (const std::exception& e) {
    throw Error("model '" + m.name + "': stored quality is malformed: " + e.what());
  }
  m.architecture = st.column_text(14);
  m.head_dim = st.column_int64(15);
  return m;
}

WorkerRow read_worker(const sql::Statement& st) {
  WorkerRow w;
  w.id = st.column_int64(0);
  w.name = st.column_text(1);
  HardwareProfile& h = w.hardware;
  h.host = st.column_text(2);
  h.cpu_model = st.column_text(3);
  h.threads = static_cast<int>(st.column_int64(4));
  h.gflops = st.column_double(5);
  h.copy_gbps = st.column_double(6);
  h.mem_total_bytes = st.column_int64(7);
  h.mem_free_bytes = st.column_int64(8);
  h.measured_at = st.column_text(9);
  return w;
}

// A JSON id column: encrypted ids are stored as JSON arrays, not as frames.
template <class T>
T id_column(const sql::Statement& st, int col, const std::string& path, const TaskRow& t, const char* name) {
  try {
    return nlohmann::json::parse(st.column_text(col)).get<T>();
  } catch (const nlohmann::json::exception&) {
    throw Error(path + ": task '" + t.ext_id + "': " + name + " is not a JSON array of ids");
  }
}

TaskRow read_task(const sql::Statement& st, const std::string& path) {
  using Rows = std::vector<std::vector<int64_t>>;
  TaskRow t;
  t.id = st.column_int64(0);
  t.ext_id = st.column_text(1);
  t.model_id = st.column_int64(2);
  t.draft_model_id = opt_int64(st, 3);
  t.prompt_tokens = st.column_int64(4);
  t.generation.max_new_tokens = st.column_int64(5);
  t.batch = st.column_int64(6);
  t.generation.temperature = st.column_double(7);
  t.generation.top_p = st.column_double(8);
  t.quality = parse_quality(st.column_text(9));
  t.prompt_ids = id_column<Rows>(st, 10, path, t, "prompt_ids");
  t.features = st.column_text(11);
  t.status = parse_task_status(st.column_text(12));
  t.created_at = st.column_text(13);
  t.updated_at = st.column_text(14);
  t.max_ppl_ratio = st.column_double(15);
  t.generation.top_k = st.column_int64(16);
  t.generation.seed = static_cast<uint64_t>(st.column_int64(17));  // stored as its two's complement bits
  t.generation.stop_ids = id_column<std::vector<int64_t>>(st, 18, path, t, "stop_ids");
  t.from_client = st.column_int64(19) != 0;
  t.key_fingerprint = st.column_text(20);
  t.pinned_arm = st.column_text(21);
  auto& o = t.outcome;
  o.tokens = id_column<Rows>(st, 22, path, t, "answer_ids");
  o.error = st.column_text(23);
  o.worker = st.column_text(24);
  o.arm = st.column_text(25);
  o.explored = st.column_int64(26) != 0;
  o.attempts = st.column_int64(27);
  o.predicted_ms = st.column_double(28);
  o.ppl_ratio = opt_double(st, 29);
  o.run_id = opt_int64(st, 30);
  return t;
}

RunRow read_run(const sql::Statement& st) {
  RunRow r;
  r.id = st.column_int64(0);
  r.task_id = st.column_int64(1);
  r.worker_id = opt_int64(st, 2);
  r.arm = st.column_text(3);
  r.policy = st.column_text(4);
  r.explored = st.column_int64(5) != 0;
  r.repeat_index = st.column_int64(6);
  r.started_at = st.column_text(7);
  r.ended_at = st.column_text(8);
  r.latency_ms = st.column_double(9);
  r.ttft_ms = st.column_double(10);
  r.ms_per_token = st.column_double(11);
  r.tokens_per_s = st.column_double(12);
  r.new_tokens = st.column_int64(13);
  r.peak_rss_bytes = st.column_int64(14);
  r.acceptance_rate = opt_double(st, 15);
  r.quality = opt_double(st, 16);
  r.ok = st.column_int64(17) != 0;
  r.error = st.column_text(18);
  r.code_version = st.column_int64(19);
  return r;
}

}  // namespace

Store Store::open(const std::filesystem::path& path) {
  sql::Database db(path.string(), sql::OpenMode::Create);
  db.set_busy_timeout(std::chrono::seconds(10));
  db.exec("PRAGMA foreign_keys = ON");  // per connection, and a no-op inside a transaction
  db.enable_wal();
  // WAL + NORMAL: a killed process loses nothing committed; only power loss may drop the last commits.
  db.exec("PRAGMA synchronous = NORMAL");
  migrate(db);
  return Store(std::move(db));
}

int Store::code_schema_version() { return kSchemaVersion; }

int Store::schema_version() { return read_version(db_); }

int64_t Store::upsert_model(const ModelRow& m) {
  if (m.fingerprint.empty()) throw Error(path() + ": model '" + m.name + "' has no fingerprint");
  sql::Transaction tx(db_);
  auto st = db_.prepare(
      "INSERT INTO models (name, fingerprint, layers, hidden, intermediate, heads, kv_heads, vocab, parameters, weight_bytes, "
      "dtype, encrypted, quality, architecture, head_dim) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
      "ON CONFLICT (fingerprint) DO UPDATE SET name = excluded.name, layers = excluded.layers, hidden = excluded.hidden, "
      "intermediate = excluded.intermediate, heads = excluded.heads, kv_heads = excluded.kv_heads, vocab = excluded.vocab, "
      "parameters = excluded.parameters, weight_bytes = excluded.weight_bytes, dtype = excluded.dtype, "
      "encrypted = excluded.encrypted, architecture = excluded.architecture, head_dim = excluded.head_dim, "
      // A registration without measurements keeps what an earlier one measured.
      "quality = CASE WHEN excluded.quality = '{}' THEN models.quality ELSE excluded.quality END RETURNING id");
  st.bind_text(1, m.name).bind_text(2, m.fingerprint).bind_int64(3, m.layers).bind_int64(4, m.hidden);
  st.bind_int64(5, m.intermediate).bind_int64(6, m.heads).bind_int64(7, m.kv_heads).bind_int64(8, m.vocab);
  st.bind_int64(9, m.parameters).bind_int64(10, m.weight_bytes).bind_text(11, m.dtype).bind_int64(12, m.encrypted);
  st.bind_text(13, quality_to_json(m.quality).dump()).bind_text(14, m.architecture).bind_int64(15, m.head_dim);
  st.step();
  const int64_t id = st.column_int64(0);
  st.reset();
  tx.commit();
  return id;
}

int64_t Store::upsert_worker(const WorkerRow& w) {
  if (w.name.empty()) throw Error(path() + ": worker has no name");
  sql::Transaction tx(db_);
  auto st = db_.prepare(
      "INSERT INTO workers (name, host, cpu_model, threads, gflops, copy_gbps, mem_total_bytes, mem_free_bytes, measured_at) "
      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
      "ON CONFLICT (name) DO UPDATE SET host = excluded.host, cpu_model = excluded.cpu_model, threads = excluded.threads, "
      "gflops = excluded.gflops, copy_gbps = excluded.copy_gbps, mem_total_bytes = excluded.mem_total_bytes, "
      "mem_free_bytes = excluded.mem_free_bytes, measured_at = excluded.measured_at RETURNING id");
  const HardwareProfile& h = w.hardware;
  st.bind_text(1, w.name).bind_text(2, h.host).bind_text(3, h.cpu_model).bind_int64(4, h.threads);
  st.bind_double(5, h.gflops).bind_double(6, h.copy_gbps).bind_int64(7, h.mem_total_bytes);
  st.bind_int64(8, h.mem_free_bytes).bind_text(9, h.measured_at.empty() ? iso_utc_now() : h.measured_at);
  st.step();
  const int64_t id = st.column_int64(0);
  st.reset();
  tx.commit();
  return id;
}

std::vector<ModelRow> Store::models() {
  auto st = db_.prepare(std::string("SELECT ") + kModelCols + " FROM models ORDER BY id");
  std::vector<ModelRow> out;
  while (st.step()) out.push_back(read_model(st));
  return out;
}

std::vector<WorkerRow> Store::workers() {
  auto st = db_.prepare(std::string("SELECT ") + kWorkerCols + " FROM workers ORDER BY id");
  std::vector<WorkerRow> out;
  while (st.step()) out.push_back(read_worker(st));
  return out;
}

int64_t Store::insert_task(const TaskRow& t) {
  if (t.ext_id.empty()) throw Error(path() + ": task has no ext_id");
  sql::Transaction tx(db_);
  {
    // Checked first for a clear message; the UNIQUE constraint still backs it up.
    auto exists = db_.prepare("SELECT 1 FROM tasks WHERE ext_id = ?");
    exists.bind_text(1, t.ext_id);
    if (exists.step()) throw Error(path() + ": task '" + t.ext_id + "' already exists");
  }
  const std::string now = iso_utc_now();
  if (auto why = generation_refusal(t.generation)) throw Error(path() + ": task '" + t.ext_id + "': " + *why);
  auto st = db_.prepare(
      "INSERT INTO tasks (ext_id, model_id, draft_model_id, prompt_tokens, max_new_tokens, batch, temperature, top_p, quality, "
      "prompt_ids, features, status, created_at, updated_at, max_ppl_ratio, top_k, seed, stop_ids, from_client, "
      "key_fingerprint, pinned_arm) "
      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  const auto& g = t.generation;
  st.bind_text(1, t.ext_id).bind_int64(2, t.model_id);
  bind_opt(st, 3, t.draft_model_id);
  st.bind_int64(4, t.prompt_tokens).bind_int64(5, g.max_new_tokens).bind_int64(6, t.batch);
  st.bind_double(7, g.temperature).bind_double(8, g.top_p).bind_text(9, quality_name(t.quality));
  st.bind_text(10, nlohmann::json(t.prompt_ids).dump()).bind_text(11, t.features).bind_text(12, task_status_name(t.status));
  st.bind_text(13, t.created_at.empty() ? now : t.created_at).bind_text(14, t.updated_at.empty() ? now : t.updated_at);
  st.bind_double(15, t.max_ppl_ratio).bind_int64(16, g.top_k).bind_int64(17, static_cast<int64_t>(g.seed));
  st.bind_text(18, nlohmann::json(g.stop_ids).dump()).bind_int64(19, t.from_client);
  st.bind_text(20, t.key_fingerprint).bind_text(21, t.pinned_arm);
  st.run();
  const int64_t id = db_.last_insert_rowid();
  tx.commit();
  return id;
}

std::optional<TaskRow> Store::find_task_by_ext_id(const std::string& ext_id) {
  auto st = db_.prepare(std::string("SELECT ") + kTaskCols + " FROM tasks WHERE ext_id = ?");
  st.bind_text(1, ext_id);
  if (!st.step()) return std::nullopt;
  return read_task(st, path());
}

void Store::set_task_status(int64_t task_id, TaskStatus status) {
  sql::Transaction tx(db_);
  auto st = db_.prepare("UPDATE tasks SET status = ?, updated_at = ? WHERE id = ?");
  st.bind_text(1, task_status_name(status)).bind_text(2, iso_utc_now()).bind_int64(3, task_id);
  st.run();
  if (db_.changes() == 0) throw Error(path() + ": no task with id " + std::to_string(task_id));
  tx.commit();
}

void Store::finish_task_in(int64_t task_id, TaskStatus status, const TaskOutcome& o) {
  // Retention `none`: the ids go as the task ends, in the same write (and secure_delete zeroes
  // the bytes the old row held).
  const bool wipe = retention_.mode == Retention::Mode::None && status != TaskStatus::Pending && status != TaskStatus::Running;
  auto st = db_.prepare(wipe ? "UPDATE tasks SET status = ?, updated_at = ?, answer_ids = ?, error = ?, worker = ?, arm = ?, "
                               "explored = ?, attempts = ?, predicted_ms = ?, ppl_ratio = ?, run_id = ?, prompt_ids = '[]', "
                               "stop_ids = '[]' WHERE id = ?"
                             : "UPDATE tasks SET status = ?, updated_at = ?, answer_ids = ?, error = ?, worker = ?, arm = ?, "
                               "explored = ?, attempts = ?, predicted_ms = ?, ppl_ratio = ?, run_id = ? WHERE id = ?");
  st.bind_text(1, task_status_name(status)).bind_text(2, iso_utc_now());
  st.bind_text(3, wipe ? std::string("[]") : nlohmann::json(o.tokens).dump());
  st.bind_text(4, o.error).bind_text(5, o.worker).bind_text(6, o.arm).bind_int64(7, o.explored).bind_int64(8, o.attempts);
  st.bind_double(9, o.predicted_ms);
  bind_opt(st, 10, o.ppl_ratio);
  bind_opt(st, 11, o.run_id);
  st.bind_int64(12, task_id);
  st.run();
  if (db_.changes() == 0) throw Error(path() + ": no task with id " + std::to_string(task_id));
}

void Store::finish_task(int64_t task_id, TaskStatus status, const TaskOutcome& outcome) {
  sql::Transaction tx(db_);
  finish_task_in(task_id, status, outcome);
  tx.commit();
}

bool Store::finish_task_with_run(int64_t task_id, TaskStatus status, TaskOutcome outcome, const RunRow& run) {
  sql::Transaction tx(db_);
  const bool inserted = insert_run_in(run);
  outcome.run_id = run_id(run);
  finish_task_in(task_id, status, outcome);
  tx.commit();
  return inserted;
}

std::optional<int64_t> Store::run_id(const RunRow& r) {
  // Spelled like the unique index so SQLite can use it.
  auto st = db_.prepare(
      "SELECT id FROM runs WHERE task_id = ? AND ifnull(worker_id, 0) = ifnull(?, 0) AND arm = ? AND policy = ? AND "
      "repeat_index = ?");
  st.bind_int64(1, r.task_id);
  bind_opt(st, 2, r.worker_id);
  st.bind_text(3, r.arm).bind_text(4, r.policy).bind_int64(5, r.repeat_index);
  if (!st.step()) return std::nullopt;
  return st.column_int64(0);
}

std::optional<RunRow> Store::find_run(int64_t id) {
  auto st = db_.prepare(std::string("SELECT ") + kRunCols + " FROM runs WHERE id = ?");
  st.bind_int64(1, id);
  if (!st.step()) return std::nullopt;
  return read_run(st);
}

std::vector<TaskRow> Store::tasks_with_status(TaskStatus status) {
  auto st = db_.prepare(std::string("SELECT ") + kTaskCols + " FROM tasks WHERE status = ? ORDER BY id");
  st.bind_text(1, task_status_name(status));
  std::vector<TaskRow> out;
  while (st.step()) out.push_back(read_task(st, path()));
  return out;
}

bool Store::insert_run(const RunRow& r) {
  sql::Transaction tx(db_);
  const bool inserted = insert_run_in(r);
  tx.commit();
  return inserted;
}

bool Store::insert_run_in(const RunRow& r) {
  // Canonical names only, or the same arm would be counted under two names.
  const auto canonical = parse_arm(r.arm).name;
  if (canonical != r.arm) throw Error(path() + ": arm '" + r.arm + "' is not canonical (write '" + canonical + "')");
  if (r.policy.empty()) throw Error(path() + ": run of task " + std::to_string(r.task_id) + " has no policy");
  if (r.started_at.empty() || r.ended_at.empty())
    throw Error(path() + ": run of task " + std::to_string(r.task_id) + " needs started_at and ended_at");
  if (r.code_version < 1)
    throw Error(path() + ": run of task " + std::to_string(r.task_id) + " has code version " + std::to_string(r.code_version) +
                " (versions start at 1)");
  // DO NOTHING covers uniqueness only: a missing task or worker still fails loudly.
  auto st = db_.prepare(
      "INSERT INTO runs (task_id, worker_id, arm, policy, explored, repeat_index, started_at, ended_at, latency_ms, ttft_ms, "
      "ms_per_token, tokens_per_s, new_tokens, peak_rss_bytes, acceptance_rate, quality, ok, error, code_version) "
      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING");
  st.bind_int64(1, r.task_id);
  bind_opt(st, 2, r.worker_id);
  st.bind_text(3, r.arm).bind_text(4, r.policy).bind_int64(5, r.explored).bind_int64(6, r.repeat_index);
  st.bind_text(7, r.started_at).bind_text(8, r.ended_at).bind_double(9, r.latency_ms).bind_double(10, r.ttft_ms);
  st.bind_double(11, r.ms_per_token).bind_double(12, r.tokens_per_s).bind_int64(13, r.new_tokens);
  st.bind_int64(14, r.peak_rss_bytes);
  bind_opt(st, 15, r.acceptance_rate);
  bind_opt(st, 16, r.quality);
  st.bind_int64(17, r.ok).bind_text(18, r.error).bind_int64(19, r.code_version);
  st.run();
  return db_.changes() == 1;
}

bool Store::has_run(int64_t task_id, std::optional<int64_t> worker_id, const std::string& arm, const std::string& policy,
                    int64_t repeat_index) {
  return run_latency(task_id, worker_id, arm, policy, repeat_index).has_value();
}

std::optional<double> Store::run_latency(int64_t task_id, std::optional<int64_t> worker_id, const std::string& arm,
                                         const std::string& policy, int64_t repeat_index) {
  // Spelled like the unique index so SQLite can use it.
  auto st = db_.prepare(
      "SELECT latency_ms FROM runs WHERE task_id = ? AND ifnull(worker_id, 0) = ifnull(?, 0) AND arm = ? AND policy = ? AND "
      "repeat_index = ?");
  st.bind_int64(1, task_id);
  bind_opt(st, 2, worker_id);
  st.bind_text(3, arm).bind_text(4, policy).bind_int64(5, repeat_index);
  if (!st.step()) return std::nullopt;
  return st.column_double(0);
}

double arm_latency_ms(const std::vector<double>& runs_ms) {
  if (runs_ms.empty()) throw std::invalid_argument("arm_latency_ms: no runs");
  return *std::min_element(runs_ms.begin(), runs_ms.end());
}

int64_t Store::forget_runs(const std::vector<std::string>& arms, std::optional<int64_t> worker_id,
                           const std::optional<std::string>& model_name) {
  sql::Transaction tx(db_);
  auto st = db_.prepare(
      "DELETE FROM runs WHERE arm = ? AND (? IS NULL OR worker_id = ?) AND (? IS NULL OR task_id IN (SELECT t.id FROM tasks t JOIN "
      "models m ON t.model_id = m.id WHERE m.name = ?))");
  int64_t deleted = 0;
  for (const auto& arm : arms) {
    st.reset();
    st.bind_text(1, arm);
    bind_opt(st, 2, worker_id);
    bind_opt(st, 3, worker_id);
    for (int index : {4, 5})
      if (model_name)
        st.bind_text(index, *model_name);
      else
        st.bind_null(index);
    st.run();
    deleted += db_.changes();
  }
  tx.commit();
  return deleted;
}

std::vector<RunRow> Store::runs_since(const std::string& since_iso_utc) {
  auto st = db_.prepare(std::string("SELECT ") + kRunCols + " FROM runs WHERE started_at >= ? ORDER BY started_at, id");
  st.bind_text(1, since_iso_utc);
  std::vector<RunRow> out;
  while (st.step()) out.push_back(read_run(st));
  return out;
}

std::vector<LatencyRow> Store::latency_matrix(std::optional<int64_t> worker_id) {
  std::vector<LatencyRow> rows;
  std::map<int64_t, size_t> index;  // task id -> row
  {
    auto st = db_.prepare(std::string("SELECT ") + kTaskCols + " FROM tasks ORDER BY id");
    while (st.step()) {
      index[st.column_int64(0)] = rows.size();
      rows.push_back({read_task(st, path()), {}});
    }
  }
  auto st = db_.prepare("SELECT task_id, arm, latency_ms FROM runs WHERE ok = 1 AND (? IS NULL OR worker_id = ?)");
  bind_opt(st, 1, worker_id);
  bind_opt(st, 2, worker_id);
  std::map<std::pair<int64_t, std::string>, std::vector<double>> latencies;
  while (st.step()) latencies[{st.column_int64(0), st.column_text(1)}].push_back(st.column_double(2));
  for (auto& [key, values] : latencies) {
    const auto it = index.find(key.first);
    if (it != index.end()) rows[it->second].latency_ms[key.second] = arm_latency_ms(values);  // else: task added since
  }
  return rows;
}

std::vector<ArmSummary> Store::arm_summaries(std::optional<int64_t> worker_id) {
  std::map<std::string, ArmSummary> by_arm;
  {
    auto st = db_.prepare(
        "SELECT arm, count(*), sum(ok), avg(CASE WHEN ok THEN latency_ms END) FROM runs WHERE (? IS NULL OR worker_id = ?) "
        "GROUP BY arm");
    bind_opt(st, 1, worker_id);
    bind_opt(st, 2, worker_id);
    while (st.step()) {
      ArmSummary& s = by_arm[st.column_text(0)];
      s.arm = st.column_text(0);
      s.runs = st.column_int64(1);
      s.ok_runs = st.column_int64(2);
      if (!st.column_is_null(3)) s.mean_latency_ms = st.column_double(3);
    }
  }
  std::map<std::string, std::pair<double, int64_t>> speedups;  // arm -> (sum, tasks)
  for (const auto& row : latency_matrix(worker_id)) {
    if (row.latency_ms.empty()) continue;
    double best = row.latency_ms.begin()->second;
    for (const auto& [arm, ms] : row.latency_ms) best = std::min(best, ms);
    const auto kv = row.latency_ms.find("kv");
    for (const auto& [arm, ms] : row.latency_ms) {
      if (ms == best) ++by_arm[arm].wins;
      if (kv != row.latency_ms.end() && ms > 0) {
        speedups[arm].first += kv->second / ms;
        speedups[arm].second += 1;
      }
    }
  }
  std::vector<ArmSummary> out;
  for (auto& [arm, s] : by_arm) {
    s.arm = arm;  // also for an arm whose first run landed between the two queries
    if (const auto it = speedups.find(arm); it != speedups.end())
      s.mean_speedup_vs_kv = it->second.first / static_cast<double>(it->second.second);
    out.push_back(s);
  }
  return out;
}

RoundAgreement Store::round_agreement() {
  // (task, worker) -> arm -> latency of rounds 0 and 1
  std::map<std::pair<int64_t, int64_t>, std::map<std::string, std::array<std::optional<double>, 2>>> cases;
  auto st = db_.prepare(
      "SELECT task_id, ifnull(worker_id, 0), arm, repeat_index, latency_ms FROM runs WHERE policy = 'sweep' AND ok AND "
      "repeat_index IN (0, 1)");
  while (st.step())
    cases[{st.column_int64(0), st.column_int64(1)}][st.column_text(2)][static_cast<std::size_t>(st.column_int64(3))] =
        st.column_double(4);
  RoundAgreement out;
  for (const auto& [key, arms] : cases) {
    bool second_round = false;
    std::string fastest[2];
    double best[2] = {0, 0};
    for (const auto& [arm, rounds] : arms) {
      if (!rounds[0]) continue;  // a case's arms all start in round 0
      second_round = second_round || rounds[1].has_value();
      for (std::size_t r = 0; r < 2; ++r) {
        const double ms = rounds[r].value_or(*rounds[0]);
        if (fastest[r].empty() || ms < best[r]) fastest[r] = arm, best[r] = ms;
      }
    }
    if (!second_round || arms.size() < 2) continue;
    ++out.cases;
    out.agreeing += fastest[0] == fastest[1];
  }
  return out;
}

StoreCounts Store::counts() {
  auto st = db_.prepare(
      "SELECT (SELECT count(*) FROM tasks), (SELECT count(*) FROM runs), (SELECT count(*) FROM models), "
      "(SELECT count(*) FROM workers)");
  st.step();
  return {st.column_int64(0), st.column_int64(1), st.column_int64(2), st.column_int64(3)};
}

std::map<int64_t, int64_t> Store::runs_by_code_version() {
  auto st = db_.prepare("SELECT code_version, count(*) FROM runs GROUP BY code_version");
  std::map<int64_t, int64_t> out;
  while (st.step()) out[st.column_int64(0)] = st.column_int64(1);
  return out;
}

void Store::set_retention(const Retention& r) {
  retention_ = r;
  db_.exec(r.keeps_forever() ? "PRAGMA secure_delete = OFF" : "PRAGMA secure_delete = ON");
}

namespace {
// A row that still holds encrypted ids, and one that has ended.
constexpr const char* kHoldsIds = "(prompt_ids != '[]' OR stop_ids != '[]' OR answer_ids != '[]')";
constexpr const char* kEnded = "status IN ('done', 'failed', 'cancelled')";
}  // namespace

int64_t Store::purge_ids(const std::optional<std::string>& ended_before, int64_t batch) {
  if (batch < 1) throw Error(path() + ": purge batch must be at least 1");
  auto select = db_.prepare(std::string("SELECT id FROM tasks WHERE ") + kEnded + " AND " + kHoldsIds +
                            " AND (?1 IS NULL OR updated_at < ?1) ORDER BY id LIMIT ?2");
  auto wipe = db_.prepare("UPDATE tasks SET prompt_ids = '[]', stop_ids = '[]', answer_ids = '[]' WHERE id = ?");
  int64_t purged = 0;
  while (true) {
    sql::Transaction tx(db_);
    select.reset();
    if (ended_before)
      select.bind_text(1, *ended_before);
    else
      select.bind_null(1);
    select.bind_int64(2, batch);
    std::vector<int64_t> ids;
    while (select.step()) ids.push_back(select.column_int64(0));
    select.reset();
    for (const int64_t id : ids) {
      wipe.reset();
      wipe.bind_int64(1, id);
      wipe.run();
    }
    tx.commit();
    purged += static_cast<int64_t>(ids.size());
    if (static_cast<int64_t>(ids.size()) < batch) return purged;
  }
}

bool Store::truncate_wal() {
  auto st = db_.prepare("PRAGMA wal_checkpoint(TRUNCATE)");
  return st.step() && st.column_int64(0) == 0;  // column 0: 1 when a reader or writer kept it from completing
}

void Store::vacuum() { db_.exec("VACUUM"); }

IdCounts Store::id_counts() {
  auto st = db_.prepare(std::string("SELECT count(*), ifnull(sum(NOT ") + kEnded + "), 0), ifnull(sum(" + kEnded +
                        "), 0) FROM tasks WHERE " + kHoldsIds);
  st.step();
  return {st.column_int64(0), st.column_int64(1), st.column_int64(2)};
}

std::optional<double> Store::mean_acceptance(int64_t model_id, std::optional<int64_t> draft_model_id) {
  // Self-drafting arms are named +qspecK (data/arm.h); a task may name a draft and still run one.
  auto st = db_.prepare(draft_model_id
                            ? "SELECT avg(r.acceptance_rate) FROM runs r JOIN tasks t ON t.id = r.task_id "
                              "WHERE r.ok = 1 AND r.acceptance_rate IS NOT NULL AND t.model_id = ?1 AND t.draft_model_id = ?2 "
                              "AND r.arm NOT LIKE '%qspec%'"
                            : "SELECT avg(r.acceptance_rate) FROM runs r JOIN tasks t ON t.id = r.task_id "
                              "WHERE r.ok = 1 AND r.acceptance_rate IS NOT NULL AND t.model_id = ?1 AND r.arm LIKE '%qspec%'");
  st.bind_int64(1, model_id);
  if (draft_model_id) st.bind_int64(2, *draft_model_id);
  if (!st.step() || st.column_is_null(0)) return std::nullopt;
  return st.column_double(0);
}

}  // namespace eesched::data
