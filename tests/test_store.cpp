// data/: the SQLite performance store, hardware profiles and task suites, on real files in a
// temporary directory.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "data/error.h"
#include "tests/expect_error.h"
#include "data/hardware.h"
#include "data/sqlite.h"
#include "data/store.h"
#include "data/suite.h"
#include "data/retention.h"
#include "data/time.h"

namespace eesched::data {
namespace {

namespace fs = std::filesystem;

std::string error_of(const std::function<void()>& f) { return eesched::testing::error_of_type<Error>(f); }

// Runs body(0) and body(1) in two forked processes at once and expects both to succeed (return
// true, throw nothing). Open no store before: a connection must not cross a fork.
void run_in_two_processes(const std::function<bool(int)>& body) {
  pid_t children[2];
  for (int c = 0; c < 2; ++c) {
    children[c] = fork();
    ASSERT_GE(children[c], 0);
    if (children[c] == 0) {
      int code = 0;
      try {
        code = body(c) ? 0 : 2;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "process %d: %s\n", c, e.what());  // why, when the test fails
        code = 1;
      }
      _exit(code);  // no gtest teardown in the child
    }
  }
  for (pid_t pid : children) {
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0);
  }
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::random_device rd;
    dir_ = fs::temp_directory_path() / ("eesched-store-" + std::to_string(rd()) + std::to_string(rd()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  fs::path file(const std::string& name) const { return dir_ / name; }

  static ModelRow model(const std::string& fp) {
    ModelRow m;
    m.name = "target";
    m.fingerprint = fp;
    m.layers = 4;
    m.hidden = 256;
    m.intermediate = 688;
    m.heads = 8;
    m.kv_heads = 4;
    m.vocab = 4096;
    m.parameters = 5'000'000;
    m.weight_bytes = 20'000'000;
    m.dtype = "f32";
    return m;
  }
  static TaskRow task(const std::string& ext_id, int64_t model_id) {
    TaskRow t;
    t.ext_id = ext_id;
    t.model_id = model_id;
    t.prompt_tokens = 16;
    t.generation.max_new_tokens = 8;
    return t;
  }
  static RunRow run(int64_t task_id, std::optional<int64_t> worker, const std::string& arm, double ms, int64_t repeat = 0,
                    bool ok = true) {
    RunRow r;
    r.task_id = task_id;
    r.worker_id = worker;
    r.arm = arm;
    r.policy = "sweep";
    r.repeat_index = repeat;
    r.started_at = "2024-01-01T00:00:00.000Z";
    r.ended_at = "2024-01-01T00:00:01.000Z";
    r.latency_ms = ms;
    r.ok = ok;
    if (!ok) r.error = "boom";
    return r;
  }

  fs::path dir_;
};

// The one conversion from what a run measured to its store row (sweep, worker, coordinator).
TEST(RunRowOf, CopiesEveryMeasurementAndFillsMissingTimes) {
  RunMeasurement m;
  m.ok = true;
  m.latency_ms = 12.5, m.ttft_ms = 2.5, m.ms_per_token = 0.5, m.tokens_per_s = 80, m.new_tokens = 10, m.peak_rss_bytes = 1 << 20;
  m.acceptance_rate = 0.75;
  m.started_at = "2026-01-01T00:00:00.000Z";
  const auto r = run_row(m, 7, 3, "kv+spec2", "selector", 2);
  EXPECT_EQ(r.task_id, 7);
  EXPECT_EQ(r.worker_id, 3);
  EXPECT_EQ(r.arm, "kv+spec2");
  EXPECT_EQ(r.policy, "selector");
  EXPECT_EQ(r.repeat_index, 2);
  EXPECT_TRUE(r.ok);
  EXPECT_EQ(r.latency_ms, 12.5);
  EXPECT_EQ(r.ttft_ms, 2.5);
  EXPECT_EQ(r.ms_per_token, 0.5);
  EXPECT_EQ(r.tokens_per_s, 80);
  EXPECT_EQ(r.new_tokens, 10);
  EXPECT_EQ(r.peak_rss_bytes, 1 << 20);
  EXPECT_EQ(r.acceptance_rate, 0.75);
  EXPECT_EQ(r.started_at, m.started_at);
  EXPECT_EQ(r.ended_at, m.started_at) << "a run without an end time ends when it started";
  const auto failed = run_row(RunMeasurement{}, 1, std::nullopt, "kv", "sweep", 0);
  EXPECT_FALSE(failed.ok);
  EXPECT_FALSE(failed.started_at.empty());
  EXPECT_EQ(failed.worker_id, std::nullopt);
  EXPECT_EQ(r.code_version, kCodeVersion) << "a run measured now is measured by this build's code";
}

TEST_F(StoreTest, CreatesFreshStoreInWalMode) {
  const auto path = file("fresh.db");
  auto store = Store::open(path);
  EXPECT_TRUE(fs::exists(path));
  EXPECT_EQ(store.schema_version(), Store::code_schema_version());
  const auto c = store.counts();
  EXPECT_EQ(c.tasks + c.runs + c.models + c.workers, 0);
  EXPECT_TRUE(store.runs_by_code_version().empty());
  sql::Database raw(path.string(), sql::OpenMode::ReadOnly);
  auto st = raw.prepare("PRAGMA journal_mode");
  ASSERT_TRUE(st.step());
  EXPECT_EQ(st.column_text(0), "wal");
  // Reopening an up-to-date store changes nothing.
  auto again = Store::open(path);
  EXPECT_EQ(again.schema_version(), Store::code_schema_version());
}

TEST_F(StoreTest, UpgradesVersionOneKeepingData) {
  const auto path = file("v1.db");
  {
    // The version-1 shape, written by hand: no acceptance_rate / quality columns on runs.
    sql::Database raw(path.string());
    raw.exec(R"sql(
      CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (1);
      CREATE TABLE models (id INTEGER PRIMARY KEY, name TEXT NOT NULL, fingerprint TEXT NOT NULL UNIQUE,
        layers INTEGER NOT NULL, hidden INTEGER NOT NULL, intermediate INTEGER NOT NULL, heads INTEGER NOT NULL,
        kv_heads INTEGER NOT NULL, vocab INTEGER NOT NULL, parameters INTEGER NOT NULL, weight_bytes INTEGER NOT NULL,
        dtype TEXT NOT NULL, encrypted INTEGER NOT NULL);
      CREATE TABLE workers (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, host TEXT NOT NULL, cpu_model TEXT NOT NULL,
        threads INTEGER NOT NULL, gflops REAL NOT NULL, copy_gbps REAL NOT NULL, mem_total_bytes INTEGER NOT NULL,
        mem_free_bytes INTEGER NOT NULL, measured_at TEXT NOT NULL);
      CREATE TABLE tasks (id INTEGER PRIMARY KEY, ext_id TEXT NOT NULL UNIQUE, model_id INTEGER NOT NULL REFERENCES models(id),
        draft_model_id INTEGER REFERENCES models(id), prompt_tokens INTEGER NOT NULL, max_new_tokens INTEGER NOT NULL,
        batch INTEGER NOT NULL, temperature REAL NOT NULL, top_p REAL NOT NULL, quality TEXT NOT NULL,
        prompt_ids TEXT NOT NULL DEFAULT '[]', features TEXT NOT NULL DEFAULT '', status TEXT NOT NULL,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
      CREATE TABLE runs (id INTEGER PRIMARY KEY, task_id INTEGER NOT NULL REFERENCES tasks(id),
        worker_id INTEGER REFERENCES workers(id), arm TEXT NOT NULL, policy TEXT NOT NULL, explored INTEGER NOT NULL,
        repeat_index INTEGER NOT NULL, started_at TEXT NOT NULL, ended_at TEXT NOT NULL, latency_ms REAL NOT NULL,
        ttft_ms REAL NOT NULL, ms_per_token REAL NOT NULL, tokens_per_s REAL NOT NULL, new_tokens INTEGER NOT NULL,
        peak_rss_bytes INTEGER NOT NULL, ok INTEGER NOT NULL, error TEXT NOT NULL DEFAULT '');
      CREATE UNIQUE INDEX runs_unique ON runs(task_id, ifnull(worker_id, 0), arm, policy, repeat_index);
      INSERT INTO models VALUES (1, 'old', 'fp-old', 2, 64, 128, 4, 2, 512, 1000, 4000, 'f32', 0);
      INSERT INTO workers VALUES (1, 'w1', 'h', 'cpu', 2, 10.0, 5.0, 100, 50, '2023-12-31T00:00:00.000Z');
      INSERT INTO tasks VALUES (1, 'old-task', 1, NULL, 16, 8, 1, 0.0, 1.0, 'exact', '[[3,4,5]]', '', 'done',
        '2023-12-31T00:00:00.000Z', '2023-12-31T00:00:00.000Z');
      INSERT INTO runs VALUES (1, 1, 1, 'kv', 'sweep', 0, 0, '2024-01-01T00:00:00.000Z', '2024-01-01T00:00:01.000Z',
        42.0, 5.0, 4.0, 250.0, 8, 1000000, 1, '');
    )sql");
  }
  auto store = Store::open(path);
  EXPECT_EQ(store.schema_version(), Store::code_schema_version());
  const auto c = store.counts();
  EXPECT_EQ(c.models, 1);
  EXPECT_EQ(c.workers, 1);
  EXPECT_EQ(c.tasks, 1);
  EXPECT_EQ(c.runs, 1);

  const auto old = store.find_task_by_ext_id("old-task");
  ASSERT_TRUE(old);
  EXPECT_EQ(old->prompt_ids, (std::vector<std::vector<int64_t>>{{3, 4, 5}}));
  EXPECT_EQ(old->status, TaskStatus::Done);
  auto runs = store.runs_since("");
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].latency_ms, 42.0);
  EXPECT_FALSE(runs[0].acceptance_rate);  // the new columns read as absent for old rows
  EXPECT_FALSE(runs[0].quality);
  EXPECT_EQ(runs[0].code_version, 1);  // recorded before runs carried a version

  // The new columns work.
  auto r = run(old->id, 1, "kv+spec4", 30.0);
  r.acceptance_rate = 0.75;
  r.quality = 1.0;
  ASSERT_TRUE(store.insert_run(r));
  runs = store.runs_since("");
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[1].acceptance_rate, 0.75);
  EXPECT_EQ(runs[1].quality, 1.0);
  EXPECT_EQ(runs[1].code_version, kCodeVersion);
  EXPECT_EQ(store.runs_by_code_version(), (std::map<int64_t, int64_t>{{1, 1}, {kCodeVersion, 1}}));
}

// A client's task keeps its whole GenerationParams, its key, its pinned arm and, once finished,
// how it ended, as columns: what goes in comes back whole.
TEST_F(StoreTest, AClientTaskAndItsOutcomeRoundTripWhole) {
  auto store = Store::open(file("s.db"));
  const int64_t m = store.upsert_model(model("fp"));
  const int64_t w = store.upsert_worker(worker_row("w1", HardwareProfile{}));
  TaskRow t = task("req-1", m);
  t.generation = {48, 0.75, 40, 0.5, UINT64_MAX, {2, 99}};  // a seed beyond int64 must survive
  t.batch = 2;
  t.prompt_ids = {{5, 6, 7}, {8, 9, 10}};
  t.quality = Quality::Tolerant;
  t.max_ppl_ratio = 1.02;
  t.from_client = true;
  t.key_fingerprint = "ab12";
  t.pinned_arm = "kv+int8";
  t.id = store.insert_task(t);
  auto back = store.find_task_by_ext_id("req-1");
  ASSERT_TRUE(back);
  t.created_at = back->created_at, t.updated_at = back->updated_at;
  EXPECT_EQ(*back, t);

  TaskOutcome o;
  o.tokens = {{11, 12}, {13}};
  o.worker = "w1";
  o.arm = "kv+int8";
  o.explored = true;
  o.attempts = 2;
  o.predicted_ms = 12.5;
  o.ppl_ratio = 1.004;
  auto r = run(t.id, w, "kv+int8", 30.0);
  ASSERT_TRUE(store.finish_task_with_run(t.id, TaskStatus::Done, o, r));
  back = store.find_task_by_ext_id("req-1");
  ASSERT_TRUE(back && back->outcome.run_id);
  EXPECT_EQ(back->status, TaskStatus::Done);
  o.run_id = back->outcome.run_id;
  EXPECT_EQ(back->outcome, o);
  const auto stored_run = store.find_run(*o.run_id);
  ASSERT_TRUE(stored_run);
  EXPECT_EQ(stored_run->latency_ms, 30.0);
  EXPECT_EQ(stored_run->arm, "kv+int8");
}

// Version 4 kept a client's request and answer as JSON text; version 5 moves them into columns.
TEST_F(StoreTest, UpgradesVersionFourRequestsAndAnswersIntoColumns) {
  const auto path = file("v4.db");
  {
    auto v5 = Store::open(path);  // the shape, then rolled back to v4's by hand
    const int64_t m = v5.upsert_model(model("fp"));
    v5.upsert_worker(worker_row("w1", HardwareProfile{}));
    TaskRow client = task("req-old", m), sweep = task("suite-1", m);
    client.prompt_ids = {{3, 4}};
    client.id = v5.insert_task(client);
    sweep.id = v5.insert_task(sweep);
    ASSERT_TRUE(v5.insert_run(run(client.id, 1, "kv", 42.0)));
  }
  {
    sql::Database raw(path.string());
    raw.exec(R"sql(
      ALTER TABLE tasks ADD COLUMN request TEXT NOT NULL DEFAULT '{}';
      ALTER TABLE tasks ADD COLUMN result TEXT NOT NULL DEFAULT '';
      UPDATE tasks SET request = '{"request_id":"req-old","model":"target","key_fingerprint":"k1","stop_ids":[2],"seed":7,"arm":"kv"}',
        status = 'done',
        result = '{"type":"Result","v":1,"task_id":1,"attempt":1,"report":{"ok":true,"tokens":[[9,8]],"latency_ms":42.0},"worker":"w1","arm":"kv","explored":false,"attempts":1,"predicted_ms":40.5}'
        WHERE ext_id = 'req-old';
      UPDATE schema_version SET version = 4;
    )sql");
    for (const char* column : {"top_k", "seed", "stop_ids", "from_client", "key_fingerprint", "pinned_arm", "answer_ids", "error", "worker",
                               "arm", "explored", "attempts", "predicted_ms", "ppl_ratio", "run_id"})
      raw.exec(std::string("ALTER TABLE tasks DROP COLUMN ") + column);
    for (const char* column : {"architecture", "head_dim"}) raw.exec(std::string("ALTER TABLE models DROP COLUMN ") + column);
    raw.exec("ALTER TABLE runs DROP COLUMN code_version");  // v6
  }
  auto store = Store::open(path);
  EXPECT_EQ(store.schema_version(), Store::code_schema_version());
  const auto client = store.find_task_by_ext_id("req-old");
  ASSERT_TRUE(client);
  EXPECT_TRUE(client->from_client);
  EXPECT_EQ(client->key_fingerprint, "k1");
  EXPECT_EQ(client->pinned_arm, "kv");
  EXPECT_EQ(client->generation.seed, 7u);
  EXPECT_EQ(client->generation.stop_ids, (std::vector<int64_t>{2}));
  EXPECT_EQ(client->outcome.tokens, (std::vector<std::vector<int64_t>>{{9, 8}}));
  EXPECT_EQ(client->outcome.worker, "w1");
  EXPECT_EQ(client->outcome.attempts, 1);
  EXPECT_EQ(client->outcome.predicted_ms, 40.5);
  ASSERT_TRUE(client->outcome.run_id);
  EXPECT_EQ(store.find_run(*client->outcome.run_id)->latency_ms, 42.0);
  ASSERT_EQ(store.models().size(), 1u);
  EXPECT_EQ(store.models()[0].architecture, "llama");  // what every model before v5 was
  EXPECT_EQ(store.models()[0].head_dim, 0);
  const auto sweep = store.find_task_by_ext_id("suite-1");
  ASSERT_TRUE(sweep);
  EXPECT_FALSE(sweep->from_client);
  EXPECT_TRUE(sweep->outcome.tokens.empty());
}

// Version 6 records which code measured a run: the runs already there were measured before runs
// carried a version (1), a run recorded now carries this build's, and one recorded with another
// version (copied from another store) keeps it.
TEST_F(StoreTest, UpgradesVersionFiveRunsToCodeVersionOne) {
  const auto path = file("v5.db");
  int64_t t = 0, w = 0;
  {
    auto v6 = Store::open(path);  // the shape, then rolled back to v5's by hand
    t = v6.insert_task(task("t", v6.upsert_model(model("fp"))));
    w = v6.upsert_worker(worker_row("w1", HardwareProfile{}));
    ASSERT_TRUE(v6.insert_run(run(t, w, "kv", 10.0)));
    ASSERT_TRUE(v6.insert_run(run(t, w, "kv", 11.0, 1)));
  }
  {
    sql::Database raw(path.string());
    raw.exec("ALTER TABLE runs DROP COLUMN code_version; UPDATE schema_version SET version = 5;");
  }
  auto store = Store::open(path);
  EXPECT_EQ(store.schema_version(), Store::code_schema_version());
  auto runs = store.runs_since("");
  ASSERT_EQ(runs.size(), 2u);
  for (const auto& r : runs) EXPECT_EQ(r.code_version, 1) << r.repeat_index;
  EXPECT_EQ(store.runs_by_code_version(), (std::map<int64_t, int64_t>{{1, 2}}));

  ASSERT_TRUE(store.insert_run(run(t, w, "kv+int8", 9.0)));  // measured now: RunRow's default
  auto copied = run(t, w, "plain", 30.0);
  copied.code_version = kCodeVersion + 1;  // e.g. copied from a store a newer build wrote
  ASSERT_TRUE(store.insert_run(copied));
  const auto now = store.run_id(run(t, w, "kv+int8", 9.0));
  const auto kept = store.run_id(copied);
  ASSERT_TRUE(now && kept);
  EXPECT_EQ(store.find_run(*now)->code_version, kCodeVersion);
  EXPECT_EQ(store.find_run(*kept)->code_version, kCodeVersion + 1);
  EXPECT_EQ(store.runs_by_code_version(), (std::map<int64_t, int64_t>{{1, 2}, {kCodeVersion, 1}, {kCodeVersion + 1, 1}}));
  int64_t total = 0;
  for (const auto& [version, n] : store.runs_by_code_version()) total += n;
  EXPECT_EQ(total, store.counts().runs);

  auto unversioned = run(t, w, "kv", 12.0, 2);
  unversioned.code_version = 0;
  EXPECT_NE(error_of([&] { store.insert_run(unversioned); }).find("code version 0"), std::string::npos);
  EXPECT_EQ(store.counts().runs, 4);
}

TEST_F(StoreTest, RefusesNewerSchemaAndForeignFiles) {
  const auto newer = file("newer.db");
  {
    sql::Database raw(newer.string());
    raw.exec("CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (99);");
  }
  const auto msg = error_of([&] { Store::open(newer); });
  EXPECT_NE(msg.find("newer.db: schema version 99 is newer than this eesched (" + std::to_string(Store::code_schema_version()) +
                     "); upgrade eesched"),
            std::string::npos)
      << msg;

  const auto foreign = file("foreign.db");
  {
    sql::Database raw(foreign.string());
    raw.exec("CREATE TABLE something (x INTEGER);");
  }
  EXPECT_NE(error_of([&] { Store::open(foreign); }).find("not an eesched store"), std::string::npos);

  const auto garbage = file("garbage.db");
  std::ofstream(garbage) << "this is not a database, it is a text file that is long enough to have a header\n";
  const auto g = error_of([&] { Store::open(garbage); });
  EXPECT_NE(g.find("garbage.db"), std::string::npos) << g;
  EXPECT_EQ(g.find('\n'), std::string::npos) << g;
}

TEST_F(StoreTest, ModelsWorkersAndTasks) {
  auto store = Store::open(file("s.db"));
  const int64_t m = store.upsert_model(model("fp1"));
  auto changed = model("fp1");
  changed.name = "renamed";
  EXPECT_EQ(store.upsert_model(changed), m);  // same fingerprint, same row
  auto qwen = model("fp2");
  qwen.architecture = "qwen3", qwen.head_dim = 128;
  qwen.quality = {{"int8", {1.004, 0.97}}};
  const int64_t m2 = store.upsert_model(qwen);
  EXPECT_NE(m2, m);
  const auto models = store.models();
  ASSERT_EQ(models.size(), 2u);
  EXPECT_EQ(models[0].name, "renamed");
  qwen.id = m2;
  EXPECT_TRUE(models[1] == qwen);  // every field, the architecture and head width included
  EXPECT_EQ(models[0].kv_heads, 4);

  HardwareProfile hw;
  hw.host = "h";
  hw.cpu_model = "cpu";
  hw.threads = 4;
  hw.gflops = 20;
  hw.copy_gbps = 8;
  hw.mem_total_bytes = 1000;
  hw.mem_free_bytes = 500;
  const int64_t w = store.upsert_worker(worker_row("worker-a", hw));
  hw.gflops = 25;
  EXPECT_EQ(store.upsert_worker(worker_row("worker-a", hw)), w);
  ASSERT_EQ(store.workers().size(), 1u);
  EXPECT_EQ(store.workers()[0].hardware.gflops, 25);
  EXPECT_FALSE(store.workers()[0].hardware.measured_at.empty());

  TaskSpec spec;
  spec.id = "t1";
  spec.prompt_tokens = 12;
  spec.generation.max_new_tokens = 5;
  spec.batch = 2;
  spec.generation.temperature = 0.7;
  spec.generation.top_p = 0.9;
  spec.quality = Quality::Tolerant;
  auto row = task_row(spec, m, m2);
  row.prompt_ids = {{10, 11}, {12, 13}};
  row.features = R"({"prompt_tokens":12})";
  const int64_t t = store.insert_task(row);
  EXPECT_NE(error_of([&] { store.insert_task(row); }).find("task 't1' already exists"), std::string::npos);

  auto found = store.find_task_by_ext_id("t1");
  ASSERT_TRUE(found);
  EXPECT_EQ(found->id, t);
  EXPECT_EQ(found->draft_model_id, m2);
  EXPECT_EQ(found->batch, 2);
  EXPECT_EQ(found->generation.temperature, 0.7);
  EXPECT_EQ(found->quality, Quality::Tolerant);
  EXPECT_EQ(found->prompt_ids, row.prompt_ids);
  EXPECT_EQ(found->features, row.features);
  EXPECT_EQ(found->status, TaskStatus::Pending);
  EXPECT_FALSE(found->created_at.empty());
  EXPECT_FALSE(store.find_task_by_ext_id("nope"));

  EXPECT_EQ(store.tasks_with_status(TaskStatus::Pending).size(), 1u);
  store.set_task_status(t, TaskStatus::Running);
  EXPECT_TRUE(store.tasks_with_status(TaskStatus::Pending).empty());
  ASSERT_EQ(store.tasks_with_status(TaskStatus::Running).size(), 1u);
  EXPECT_NE(error_of([&] { store.set_task_status(9999, TaskStatus::Done); }).find("no task with id 9999"), std::string::npos);

  // Foreign keys are enforced: a task of an unknown model fails loudly.
  EXPECT_NE(error_of([&] { store.insert_task(task("t2", 777)); }).find("FOREIGN KEY"), std::string::npos);
  EXPECT_EQ(parse_task_status("cancelled"), TaskStatus::Cancelled);
  EXPECT_FALSE(error_of([] { parse_task_status("lost"); }).empty());
}

TEST_F(StoreTest, RecordedRunsAreSkipped) {
  auto store = Store::open(file("s.db"));
  const int64_t t = store.insert_task(task("t", store.upsert_model(model("fp"))));
  HardwareProfile hw;
  const int64_t w = store.upsert_worker(worker_row("w", hw));

  EXPECT_FALSE(store.has_run(t, w, "kv", "sweep", 0));
  EXPECT_TRUE(store.insert_run(run(t, w, "kv", 10)));
  EXPECT_TRUE(store.has_run(t, w, "kv", "sweep", 0));
  EXPECT_FALSE(store.insert_run(run(t, w, "kv", 99)));  // same key: skipped, first kept
  EXPECT_TRUE(store.insert_run(run(t, w, "kv", 11, 1)));  // next repeat
  EXPECT_TRUE(store.insert_run(run(t, std::nullopt, "kv", 12)));  // no worker is a different key
  EXPECT_FALSE(store.insert_run(run(t, std::nullopt, "kv", 13)));  // ... and dedupes too
  EXPECT_TRUE(store.has_run(t, std::nullopt, "kv", "sweep", 0));
  EXPECT_FALSE(store.has_run(t, w, "kv", "selector", 0));
  EXPECT_EQ(store.counts().runs, 3);
  EXPECT_EQ(store.runs_since("")[0].latency_ms, 10);

  // Unknown task, non-canonical arm and missing times fail loudly instead of being skipped.
  EXPECT_NE(error_of([&] { store.insert_run(run(t + 100, w, "kv", 1)); }).find("FOREIGN KEY"), std::string::npos);
  EXPECT_NE(error_of([&] { store.insert_run(run(t, w, "int8+kv", 1)); }).find("write 'kv+int8'"), std::string::npos);
  auto no_time = run(t, w, "plain", 1);
  no_time.ended_at.clear();
  EXPECT_FALSE(error_of([&] { store.insert_run(no_time); }).empty());
  EXPECT_EQ(store.counts().runs, 3);
}

TEST_F(StoreTest, ForgettingAnArmDeletesItsRunsOnOneWorkerOrAll) {
  auto store = Store::open(file("s.db"));
  const int64_t t = store.insert_task(task("t", store.upsert_model(model("fp"))));
  HardwareProfile hw;
  const int64_t w1 = store.upsert_worker(worker_row("w1", hw)), w2 = store.upsert_worker(worker_row("w2", hw));
  for (int64_t w : {w1, w2})
    for (const char* arm : {"kv", "kv+int8", "kv+int8+prune30"})
      for (int64_t rep = 0; rep < 2; ++rep) store.insert_run(run(t, w, arm, 10, rep));
  auto by_coordinator = run(t, w1, "kv+int8", 10);
  by_coordinator.policy = "meta";
  store.insert_run(by_coordinator);
  ASSERT_EQ(store.counts().runs, 13);

  EXPECT_EQ(store.forget_runs({"kv+int8"}, w1), 3) << "both repeats and the coordinator's run";
  EXPECT_FALSE(store.has_run(t, w1, "kv+int8", "sweep", 0));
  EXPECT_TRUE(store.has_run(t, w2, "kv+int8", "sweep", 0));
  EXPECT_EQ(store.forget_runs({"kv+int8", "kv+int8+prune30"}), 6);
  EXPECT_EQ(store.forget_runs({"kv+spec4"}), 0);
  EXPECT_EQ(store.counts().runs, 4);
  EXPECT_TRUE(store.has_run(t, w1, "kv", "sweep", 1));
  EXPECT_TRUE(store.has_run(t, w2, "kv", "sweep", 0));
}

TEST_F(StoreTest, ForgettingOneModelsRunsLeavesTheOtherModelsTasksAlone) {
  auto store = Store::open(file("s.db"));
  auto other_model = model("fp-other");
  other_model.name = "syn25m";
  const int64_t t_target = store.insert_task(task("t-target", store.upsert_model(model("fp"))));
  const int64_t t_other = store.insert_task(task("t-other", store.upsert_model(other_model)));
  HardwareProfile hw;
  const int64_t w1 = store.upsert_worker(worker_row("w1", hw)), w2 = store.upsert_worker(worker_row("w2", hw));
  for (int64_t t : {t_target, t_other})
    for (int64_t w : {w1, w2})
      for (const char* arm : {"kv", "kv+int8"}) store.insert_run(run(t, w, arm, 10));
  ASSERT_EQ(store.counts().runs, 8);

  EXPECT_EQ(store.forget_runs({"kv"}, w1, std::string("target")), 1);
  EXPECT_FALSE(store.has_run(t_target, w1, "kv", "sweep", 0));
  EXPECT_TRUE(store.has_run(t_other, w1, "kv", "sweep", 0));
  EXPECT_EQ(store.forget_runs({"kv", "kv+int8"}, std::nullopt, std::string("target")), 3);
  EXPECT_EQ(store.forget_runs({"kv"}, std::nullopt, std::string("no-such-model")), 0);
  EXPECT_EQ(store.counts().runs, 4) << "every run of the other model's task stays";
  for (int64_t w : {w1, w2})
    for (const char* arm : {"kv", "kv+int8"}) EXPECT_TRUE(store.has_run(t_other, w, arm, "sweep", 0));
  EXPECT_EQ(store.counts().tasks, 2) << "the tasks stay, so a resumed sweep measures them again";
}

TEST_F(StoreTest, RoundAgreementComparesTheFastestArmOfRoundsZeroAndOne) {
  auto store = Store::open(file("s.db"));
  const int64_t m = store.upsert_model(model("fp"));
  HardwareProfile hw;
  const int64_t w = store.upsert_worker(worker_row("w", hw));
  const int64_t flip = store.insert_task(task("flip", m)), keep = store.insert_task(task("keep", m));
  const int64_t one_round = store.insert_task(task("one-round", m)), one_arm = store.insert_task(task("one-arm", m));
  // Round 1 puts int8 ahead of kv; prune was raced out after round 0.
  store.insert_run(run(flip, w, "kv", 10, 0));
  store.insert_run(run(flip, w, "kv+int8", 12, 0));
  store.insert_run(run(flip, w, "kv+prune30", 20, 0));
  store.insert_run(run(flip, w, "kv", 13, 1));
  store.insert_run(run(flip, w, "kv+int8", 11, 1));
  // int8 raced out keeps its round-0 time (12): kv stays the fastest. Failed runs and other
  // policies' runs are no rounds of the sweep.
  store.insert_run(run(keep, w, "kv", 10, 0));
  store.insert_run(run(keep, w, "kv+int8", 12, 0));
  store.insert_run(run(keep, w, "kv", 11.5, 1));
  store.insert_run(run(keep, w, "kv+int8", 1, 1, /*ok=*/false));
  auto coordinator = run(keep, w, "kv+int8", 1, 1);
  coordinator.policy = "meta";
  store.insert_run(coordinator);
  // Not counted: no second round; a single arm.
  store.insert_run(run(one_round, w, "kv", 10, 0));
  store.insert_run(run(one_round, w, "kv+int8", 9, 0));
  store.insert_run(run(one_arm, w, "kv", 10, 0));
  store.insert_run(run(one_arm, w, "kv", 12, 1));

  const auto a = store.round_agreement();
  EXPECT_EQ(a.cases, 2);
  EXPECT_EQ(a.agreeing, 1);
}

TEST_F(StoreTest, RunsSinceOrdersByStart) {
  auto store = Store::open(file("s.db"));
  const int64_t t = store.insert_task(task("t", store.upsert_model(model("fp"))));
  const char* starts[] = {"2024-01-03T00:00:00.000Z", "2024-01-01T12:00:00.000Z", "2024-01-02T00:00:00.000Z"};
  for (int i = 0; i < 3; ++i) {
    auto r = run(t, std::nullopt, "kv", 10 + i, i);
    r.started_at = starts[i];
    store.insert_run(r);
  }
  const auto since = store.runs_since("2024-01-02");
  ASSERT_EQ(since.size(), 2u);
  EXPECT_EQ(since[0].started_at, starts[2]);
  EXPECT_EQ(since[1].started_at, starts[0]);
  EXPECT_EQ(store.runs_since(iso_utc_now()).size(), 0u);
  EXPECT_EQ(iso_utc(std::chrono::system_clock::time_point(std::chrono::milliseconds(1'700'000'000'123))),
            "2023-11-14T22:13:20.123Z");
}

TEST_F(StoreTest, TransactionRollsBackUnlessCommitted) {
  sql::Database db(file("raw.db").string());
  db.exec("CREATE TABLE x (v INTEGER)");
  {
    sql::Transaction tx(db);
    db.prepare("INSERT INTO x VALUES (?)").bind_int64(1, 1).run();
  }
  {
    sql::Transaction tx(db);
    db.prepare("INSERT INTO x VALUES (?)").bind_int64(1, 2).run();
    tx.commit();
  }
  auto st = db.prepare("SELECT group_concat(v) FROM x");
  ASSERT_TRUE(st.step());
  EXPECT_EQ(st.column_text(0), "2");

  // Blobs, text, nulls and doubles round-trip through the wrapper.
  db.exec("CREATE TABLE y (b BLOB, t TEXT, n INTEGER, d REAL)");
  const std::vector<uint8_t> blob{0, 1, 255};
  db.prepare("INSERT INTO y VALUES (?, ?, ?, ?)").bind_blob(1, blob).bind_text(2, "é\n").bind_null(3).bind_double(4, 0.5).run();
  auto y = db.prepare("SELECT b, t, n, d FROM y");
  ASSERT_TRUE(y.step());
  EXPECT_EQ(y.column_blob(0), blob);
  EXPECT_EQ(y.column_text(1), "é\n");
  EXPECT_TRUE(y.column_is_null(2));
  EXPECT_EQ(y.column_double(3), 0.5);
  EXPECT_FALSE(y.step());

  const auto msg = error_of([&] { db.prepare("SELEC nonsense"); });
  EXPECT_NE(msg.find("raw.db"), std::string::npos) << msg;
  EXPECT_NE(msg.find("syntax error"), std::string::npos) << msg;
}

// Two processes, each with its own connection, insert 300 runs in 300 transactions at once.
TEST_F(StoreTest, TwoProcessesWritingAtOnceLoseNothing) {
  const auto path = file("shared.db");
  int64_t t = 0, w[2] = {0, 0};
  {
    auto store = Store::open(path);
    t = store.insert_task(task("t", store.upsert_model(model("fp"))));
    w[0] = store.upsert_worker(worker_row("w0", HardwareProfile{}));
    w[1] = store.upsert_worker(worker_row("w1", HardwareProfile{}));
  }  // closed before fork: a connection must not cross a fork
  constexpr int kRuns = 300;
  run_in_two_processes([&](int c) {
    auto store = Store::open(path);
    for (int i = 0; i < kRuns; ++i)
      if (!store.insert_run(run(t, w[c], "kv", 1.0 + i, i))) return false;
    return true;
  });
  auto store = Store::open(path);
  EXPECT_EQ(store.counts().runs, 2 * kRuns);
  EXPECT_EQ(store.latency_matrix(w[0])[0].latency_ms.at("kv"), 1.0) << "the fastest of 1..300 ms";
}

// Two processes creating the same new store at once: one migrates, the other waits and sees it.
TEST_F(StoreTest, TwoProcessesCreatingAtOnce) {
  const auto path = file("new.db");
  run_in_two_processes([&](int c) {
    auto store = Store::open(path);
    store.upsert_model(model("fp" + std::to_string(c)));
    return true;
  });
  auto store = Store::open(path);
  EXPECT_EQ(store.counts().models, 2);
  EXPECT_EQ(store.schema_version(), Store::code_schema_version());
}

// A hand-made matrix with hand-computed latencies (the fastest run), wins and speedups.
TEST_F(StoreTest, LatencyMatrixAndArmSummaries) {
  auto store = Store::open(file("m.db"));
  const int64_t m = store.upsert_model(model("fp"));
  const int64_t t1 = store.insert_task(task("t1", m));
  const int64_t t2 = store.insert_task(task("t2", m));
  const int64_t t3 = store.insert_task(task("t3", m));
  const int64_t t4 = store.insert_task(task("t4", m));
  const int64_t w = store.upsert_worker(worker_row("w", HardwareProfile{}));
  const int64_t other = store.upsert_worker(worker_row("other", HardwareProfile{}));
  // t1: kv {100, 120, 110} -> 100; plain 300; kv+int8 90 (+ a failed run, ignored) -> int8 wins.
  store.insert_run(run(t1, w, "kv", 100, 0));
  store.insert_run(run(t1, w, "kv", 120, 1));
  store.insert_run(run(t1, w, "kv", 110, 2));
  store.insert_run(run(t1, w, "plain", 300));
  store.insert_run(run(t1, w, "kv+int8", 90, 0));
  store.insert_run(run(t1, w, "kv+int8", 5, 1, /*ok=*/false));
  // t2: kv {70, 50} -> 50; plain 200 -> kv wins.
  store.insert_run(run(t2, w, "kv", 70, 0));
  store.insert_run(run(t2, w, "kv", 50, 1));
  store.insert_run(run(t2, w, "plain", 200));
  // t3: nothing ran. t4: kv and kv+int8 tie at 40 -> both win.
  store.insert_run(run(t4, w, "kv", 40));
  store.insert_run(run(t4, w, "kv+int8", 40));
  // Another worker's run shows up only without the worker filter.
  store.insert_run(run(t3, other, "plain", 1000));

  const auto matrix = store.latency_matrix(w);
  ASSERT_EQ(matrix.size(), 4u);
  EXPECT_EQ(matrix[0].task.ext_id, "t1");
  EXPECT_EQ(matrix[0].latency_ms, (std::map<std::string, double>{{"kv", 100}, {"kv+int8", 90}, {"plain", 300}}));
  EXPECT_EQ(matrix[1].latency_ms, (std::map<std::string, double>{{"kv", 50}, {"plain", 200}}));
  EXPECT_TRUE(matrix[2].latency_ms.empty());
  EXPECT_EQ(matrix[3].latency_ms, (std::map<std::string, double>{{"kv", 40}, {"kv+int8", 40}}));
  EXPECT_EQ(store.latency_matrix()[2].latency_ms, (std::map<std::string, double>{{"plain", 1000}}));

  const auto s = store.arm_summaries(w);
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[0].arm, "kv");
  EXPECT_EQ(s[0].runs, 6);
  EXPECT_EQ(s[0].ok_runs, 6);
  EXPECT_DOUBLE_EQ(*s[0].mean_latency_ms, 490.0 / 6);
  EXPECT_EQ(s[0].wins, 2);
  EXPECT_DOUBLE_EQ(*s[0].mean_speedup_vs_kv, 1.0);

  EXPECT_EQ(s[1].arm, "kv+int8");
  EXPECT_EQ(s[1].runs, 3);
  EXPECT_EQ(s[1].ok_runs, 2);
  EXPECT_DOUBLE_EQ(*s[1].mean_latency_ms, 65.0);
  EXPECT_EQ(s[1].wins, 2);
  EXPECT_DOUBLE_EQ(*s[1].mean_speedup_vs_kv, (100.0 / 90 + 1.0) / 2);

  EXPECT_EQ(s[2].arm, "plain");
  EXPECT_EQ(s[2].runs, 2);
  EXPECT_DOUBLE_EQ(*s[2].mean_latency_ms, 250.0);
  EXPECT_EQ(s[2].wins, 0);
  EXPECT_DOUBLE_EQ(*s[2].mean_speedup_vs_kv, (100.0 / 300 + 50.0 / 200) / 2);

  // Unfiltered: plain also wins t3, where kv never ran (so no speedup is counted there).
  const auto all = store.arm_summaries();
  EXPECT_EQ(all[2].runs, 3);
  EXPECT_EQ(all[2].wins, 1);
  EXPECT_DOUBLE_EQ(*all[2].mean_speedup_vs_kv, (100.0 / 300 + 50.0 / 200) / 2);

  const auto c = store.counts();
  EXPECT_EQ(c.tasks, 4);
  EXPECT_EQ(c.runs, 12);
  EXPECT_EQ(c.models, 1);
  EXPECT_EQ(c.workers, 2);
}

TEST_F(StoreTest, AcceptanceLandmarkIsTheMeanOfOkSpeculativeRuns) {
  auto store = Store::open(file("l.db"));
  const int64_t target = store.upsert_model(model("target")), draft = store.upsert_model(model("draft"));
  auto with_draft = task("t1", target);
  with_draft.draft_model_id = draft;
  const int64_t t1 = store.insert_task(with_draft);
  EXPECT_FALSE(store.mean_acceptance(target, draft));
  auto spec = [&](double rate, int64_t repeat, bool ok) {
    auto r = run(t1, std::nullopt, "kv+spec4", 10, repeat, ok);
    r.acceptance_rate = rate;
    store.insert_run(r);
  };
  spec(0.4, 0, true);
  spec(0.8, 1, true);
  spec(0.0, 2, false);  // a failed run says nothing about the pair
  store.insert_run(run(t1, std::nullopt, "kv", 10));
  ASSERT_TRUE(store.mean_acceptance(target, draft));
  EXPECT_NEAR(*store.mean_acceptance(target, draft), 0.6, 1e-12);
  EXPECT_FALSE(store.mean_acceptance(draft, target));
  // The target drafting itself (qspecK) is its own landmark, even on a task that names a draft.
  EXPECT_FALSE(store.mean_acceptance(target, std::nullopt));
  auto self = run(t1, std::nullopt, "kv+qspec6", 10, 0);
  self.acceptance_rate = 0.95;
  store.insert_run(self);
  ASSERT_TRUE(store.mean_acceptance(target, std::nullopt));
  EXPECT_NEAR(*store.mean_acceptance(target, std::nullopt), 0.95, 1e-12);
  EXPECT_NEAR(*store.mean_acceptance(target, draft), 0.6, 1e-12);
}

TEST_F(StoreTest, HardwareProfile) {
  // How long it takes (~0.35 s idle) is a benchmark's business, not a test's: loaded CI machines vary.
  const auto p = measure_hardware(2);
  EXPECT_EQ(p.threads, 2);
  EXPECT_GT(p.gflops, 0.1);
  EXPECT_GT(p.copy_gbps, 0.1);
  EXPECT_GT(p.mem_total_bytes, 0);
  EXPECT_GT(p.mem_free_bytes, 0);
  EXPECT_LE(p.mem_free_bytes, p.mem_total_bytes);
  EXPECT_FALSE(p.host.empty());
  EXPECT_FALSE(p.cpu_model.empty());
  EXPECT_EQ(p.measured_at.size(), 24u);

  const auto back = nlohmann::json(p).get<HardwareProfile>();
  EXPECT_EQ(back.host, p.host);
  EXPECT_EQ(back.gflops, p.gflops);
  EXPECT_EQ(back.measured_at, p.measured_at);
  EXPECT_NE(error_of([] { nlohmann::json{{"host", 1}}.get<HardwareProfile>(); }).find("hardware profile"), std::string::npos);

  // The cache: the first call measures and writes, the second reads the same figures back.
  const auto cache = dir_ / "cache";
  const auto first = load_or_measure_hardware(cache, 1);
  EXPECT_EQ(first.threads, 1);
  int files = 0;
  for (const auto& e : fs::directory_iterator(cache)) {
    ++files;
    EXPECT_NE(e.path().filename().string().find("-1.json"), std::string::npos) << e.path();
  }
  EXPECT_EQ(files, 1);
  const auto second = load_or_measure_hardware(cache, 1);
  EXPECT_EQ(second.gflops, first.gflops);
  EXPECT_EQ(second.copy_gbps, first.copy_gbps);
  EXPECT_EQ(second.measured_at, first.measured_at);

  // A corrupt cache is measured over, not an error.
  for (const auto& e : fs::directory_iterator(cache)) std::ofstream(e.path()) << "{not json";
  EXPECT_GT(load_or_measure_hardware(cache, 1).gflops, 0);
}

void write_text(const fs::path& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

TEST_F(StoreTest, SuiteRoundTrip) {
  std::vector<TaskSpec> tasks(3);
  tasks[0].id = "a";
  tasks[0].model = "models/target";
  tasks[0].prompt = "Once upon a time \"quoted\"\n";
  tasks[0].generation.max_new_tokens = 16;
  tasks[1].id = "b";
  tasks[1].model = "synthetic-110m";
  tasks[1].draft = "models/target";
  tasks[1].prompt_tokens = 512;
  tasks[1].generation.max_new_tokens = 256;
  tasks[1].batch = 8;
  tasks[1].generation.temperature = 0.8;
  tasks[1].generation.top_p = 0.95;
  tasks[1].quality = Quality::Tolerant;
  tasks[2].id = "c";
  tasks[2].model = "m";
  tasks[2].prompt_tokens = 4;
  tasks[2].generation.max_new_tokens = 1;

  const auto path = file("suite.jsonl");
  write_suite(path, tasks);
  EXPECT_FALSE(fs::exists(path.string() + ".tmp." + std::to_string(getpid())));
  const auto back = read_suite(path);
  ASSERT_EQ(back.size(), tasks.size());
  for (size_t i = 0; i < tasks.size(); ++i) {
    EXPECT_EQ(back[i].id, tasks[i].id);
    EXPECT_EQ(back[i].model, tasks[i].model);
    EXPECT_EQ(back[i].draft, tasks[i].draft);
    EXPECT_EQ(back[i].prompt, tasks[i].prompt);
    EXPECT_EQ(back[i].prompt_tokens, tasks[i].prompt_tokens);
    EXPECT_EQ(back[i].generation.max_new_tokens, tasks[i].generation.max_new_tokens);
    EXPECT_EQ(back[i].batch, tasks[i].batch);
    EXPECT_EQ(back[i].generation.temperature, tasks[i].generation.temperature);
    EXPECT_EQ(back[i].generation.top_p, tasks[i].generation.top_p);
    EXPECT_EQ(back[i].quality, tasks[i].quality);
  }
  // Key order is the documented one, for people reading the file.
  std::ifstream in(path);
  std::string first;
  std::getline(in, first);
  EXPECT_EQ(first.rfind(R"({"id":"a","model":"models/target","prompt":)", 0), 0u) << first;

  // Defaults, comments, blank lines and CRLF.
  write_text(path, "# a comment\n\n{\"id\": \"x\", \"model\": \"m\", \"prompt_tokens\": 8, \"max_new_tokens\": 2}\r\n   \n");
  const auto one = read_suite(path);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].batch, 1);
  EXPECT_EQ(one[0].generation.temperature, 0.0);
  EXPECT_EQ(one[0].generation.top_p, 1.0);
  EXPECT_EQ(one[0].quality, Quality::Exact);

  // Writing an invalid task fails and leaves the old file alone.
  auto bad = tasks;
  bad[1].batch = 65;
  EXPECT_NE(error_of([&] { write_suite(path, bad); }).find("task #2 'b': batch must be in 1..64"), std::string::npos);
  EXPECT_EQ(read_suite(path).size(), 1u);
  bad = tasks;
  bad[2].id = "a";
  EXPECT_NE(error_of([&] { write_suite(path, bad); }).find("duplicate id"), std::string::npos);

  EXPECT_EQ(task_from_json(task_to_json(tasks[1])).draft, "models/target");
}

TEST_F(StoreTest, MalformedSuiteReportsEveryBadLine) {
  const auto path = file("bad.jsonl");
  const std::string good = R"({"id": "ok1", "model": "m", "prompt": "hi", "max_new_tokens": 4})";
  write_text(path,
             good + "\n" +                                                                        // 1 ok
                 "{\"id\": \"x\", \"model\": \n" +                                               // 2 bad JSON
                 "# comment\n" +                                                                   // 3 skipped
                 R"({"id": "b0", "model": "m", "prompt_tokens": 8, "max_new_tokens": 4, "batch": 0})" "\n"  // 4
                 R"({"id": "both", "model": "m", "prompt": "p", "prompt_tokens": 8, "max_new_tokens": 4})" "\n"  // 5
                 R"({"id": "ok1", "model": "m", "prompt_tokens": 8, "max_new_tokens": 4})" "\n"  // 6 duplicate
                 R"({"id": "typo", "model": "m", "prompt_tokens": 8, "max_new_token": 4})" "\n"  // 7 unknown + missing
                 R"({"id": "q", "model": "m", "prompt_tokens": 8, "max_new_tokens": 4, "quality": "best", "top_p": 0})" "\n"  // 8
                 "\n" +                                                                            // 9 blank
                 R"({"id": "ok2", "model": "m", "prompt_tokens": 8, "max_new_tokens": 4096, "temperature": 1})" "\n"  // 10 ok
                 R"(["not", "an", "object"])" "\n"                                               // 11
                 R"({"id": "f", "model": "m", "prompt_tokens": 8.5, "max_new_tokens": 5000, "temperature": -1})" "\n");  // 12
  const auto msg = error_of([&] { read_suite(path); });
  const std::string p = path.string();
  for (int line : {2, 4, 5, 6, 7, 8, 11, 12}) EXPECT_NE(msg.find(p + ":" + std::to_string(line) + ": "), std::string::npos) << line;
  for (int line : {1, 3, 9, 10}) EXPECT_EQ(msg.find(p + ":" + std::to_string(line) + ": "), std::string::npos) << line;
  EXPECT_NE(msg.find("invalid JSON"), std::string::npos);
  EXPECT_NE(msg.find("batch must be in 1..64"), std::string::npos);
  EXPECT_NE(msg.find("not both"), std::string::npos);
  EXPECT_NE(msg.find("duplicate id 'ok1' (first on line 1)"), std::string::npos);
  EXPECT_NE(msg.find("unknown key 'max_new_token'; missing max_new_tokens"), std::string::npos);
  EXPECT_NE(msg.find("top_p must be in (0, 1]"), std::string::npos);
  EXPECT_NE(msg.find("'best'"), std::string::npos);
  EXPECT_NE(msg.find("expected a JSON object"), std::string::npos);
  EXPECT_NE(msg.find("prompt_tokens must be an integer"), std::string::npos);
  EXPECT_NE(msg.find("max_new_tokens must be in 1..4096"), std::string::npos);
  EXPECT_NE(msg.find("temperature must be >= 0"), std::string::npos);
  EXPECT_NE(msg.find("\n8 bad lines in " + p), std::string::npos) << msg;

  write_text(path, "# only comments\n\n");
  EXPECT_NE(error_of([&] { read_suite(path); }).find("no tasks"), std::string::npos);
  EXPECT_NE(error_of([&] { read_suite(file("missing.jsonl")); }).find("cannot open"), std::string::npos);
}

// ---- retention of encrypted ids (data/retention.h) --------------------------------------------

TEST(Retention, ParsesNoneAllAndDaysAndRefusesTheRestInOneLine) {
  EXPECT_EQ(parse_retention("all"), Retention::all());
  EXPECT_EQ(parse_retention("none"), Retention::none());
  EXPECT_EQ(parse_retention("7"), Retention::for_days(7));
  EXPECT_EQ(parse_retention("36500"), Retention::for_days(36500));
  for (const char* bad : {"", "0", "-1", "7d", "1.5", "36501", "999999999999", "None", " 7"}) {
    const auto msg = error_of([&] { parse_retention(bad); });
    EXPECT_NE(msg.find("give none, all, or a whole number of days from 1 to 36500"), std::string::npos) << bad << ": " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  EXPECT_EQ(retention_name(Retention::for_days(30)), "30 days");
  const auto now = std::chrono::system_clock::now();
  EXPECT_EQ(retention_cutoff(Retention::for_days(2), now), iso_utc(now - std::chrono::hours(48)));
  EXPECT_FALSE(retention_cutoff(Retention::none(), now).has_value());
}

namespace {
// A client task with recognizable encrypted ids: prompt 9000+k.., stop 8800+k, answer 7000+k...
TaskRow id_task(const std::string& ext_id, int64_t model_id, int64_t k) {
  TaskRow t;
  t.ext_id = ext_id;
  t.model_id = model_id;
  t.prompt_tokens = 4;
  t.generation.max_new_tokens = 3;
  t.generation.stop_ids = {8800 + k};
  t.prompt_ids = {{9000 + k, 9100 + k, 9200 + k, 9300 + k}};
  t.from_client = true;
  return t;
}
TaskOutcome answer(int64_t k) {
  TaskOutcome o{{{7000 + k, 7100 + k, 7200 + k}}, "", "w", "kv", false, 1, 0, std::nullopt, std::nullopt};
  return o;
}
std::string file_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}
std::string prompt_json(int64_t k) { return nlohmann::json(id_task("x", 0, k).prompt_ids).dump(); }
std::string answer_json(int64_t k) { return nlohmann::json(answer(k).tokens).dump(); }
void set_updated_at(const fs::path& db, const std::string& ext_id, const std::string& when) {
  sql::Database raw(db.string());
  raw.set_busy_timeout(std::chrono::seconds(10));
  raw.prepare("UPDATE tasks SET updated_at = ?, created_at = ? WHERE ext_id = ?").bind_text(1, when).bind_text(2, when).bind_text(3, ext_id).run();
}
}  // namespace

// `none`: ids live while the task is unfinished and are wiped, in the file's bytes too, as it ends.
TEST_F(StoreTest, RetentionNoneWipesIdsAsTasksEndAndLeavesNoBytesInTheFile) {
  const auto db = file("none.db");
  {
    auto store = Store::open(db);
    store.set_retention(Retention::none());
    const int64_t m = store.upsert_model(model("fp"));
    const int64_t done = store.insert_task(id_task("done", m, 1));
    const int64_t failed = store.insert_task(id_task("failed", m, 2));
    const int64_t cancelled = store.insert_task(id_task("cancelled", m, 3));
    store.insert_task(id_task("pending", m, 4));
    EXPECT_EQ(store.id_counts().unfinished, 4);
    store.finish_task_with_run(done, TaskStatus::Done, answer(1), run(done, std::nullopt, "kv", 10));
    store.finish_task(failed, TaskStatus::Failed, answer(2));
    store.finish_task(cancelled, TaskStatus::Cancelled, answer(3));
    for (const char* id : {"done", "failed", "cancelled"}) {
      const auto row = store.find_task_by_ext_id(id);
      ASSERT_TRUE(row);
      EXPECT_TRUE(row->prompt_ids.empty()) << id;
      EXPECT_TRUE(row->outcome.tokens.empty()) << id;
      EXPECT_TRUE(row->generation.stop_ids.empty()) << id;
      EXPECT_EQ(row->outcome.worker, "w") << id;  // the rest of the outcome stays
    }
    const auto pending = store.find_task_by_ext_id("pending");
    EXPECT_EQ(pending->prompt_ids, id_task("x", 0, 4).prompt_ids);
    const auto ids = store.id_counts();
    EXPECT_EQ(ids.holding, 1);
    EXPECT_EQ(ids.unfinished, 1);
    EXPECT_EQ(ids.ended, 0);
  }
  // Closed: the write-ahead log is folded in and gone; the file holds the pending task's ids
  // (positive control) and nothing of the others'.
  EXPECT_FALSE(fs::exists(file("none.db-wal")));
  const auto bytes = file_bytes(db);
  EXPECT_NE(bytes.find(prompt_json(4)), std::string::npos);
  for (int64_t k = 1; k <= 3; ++k) {
    EXPECT_EQ(bytes.find(prompt_json(k)), std::string::npos) << k;
    EXPECT_EQ(bytes.find(answer_json(k)), std::string::npos) << k;
  }
}

// N days: a purge wipes the ids of tasks that ended before the cutoff, and only those.
TEST_F(StoreTest, PurgeWipesOnlyTasksThatEndedBeforeTheCutoff) {
  const auto db = file("days.db");
  auto store = Store::open(db);
  const int64_t m = store.upsert_model(model("fp"));
  const std::vector<std::pair<std::string, TaskStatus>> tasks = {
      {"old-done", TaskStatus::Done}, {"old-failed", TaskStatus::Failed}, {"old-pending", TaskStatus::Pending},
      {"new-done", TaskStatus::Done}, {"new-cancelled", TaskStatus::Cancelled}};
  int64_t k = 0;
  for (const auto& [id, status] : tasks) {
    const int64_t t = store.insert_task(id_task(id, m, ++k));
    if (status != TaskStatus::Pending) store.finish_task(t, status, answer(k));
  }
  const auto now = std::chrono::system_clock::now();
  for (const char* id : {"old-done", "old-failed", "old-pending"}) set_updated_at(db, id, iso_utc(now - std::chrono::hours(24 * 10)));
  set_updated_at(db, "new-done", iso_utc(now - std::chrono::hours(24 * 2)));
  EXPECT_EQ(store.id_counts().holding, 5);
  EXPECT_EQ(store.purge_ids(retention_cutoff(Retention::for_days(7), now), /*batch=*/1), 2);
  EXPECT_TRUE(store.find_task_by_ext_id("old-done")->prompt_ids.empty());
  EXPECT_TRUE(store.find_task_by_ext_id("old-done")->outcome.tokens.empty());
  EXPECT_TRUE(store.find_task_by_ext_id("old-failed")->prompt_ids.empty());
  EXPECT_FALSE(store.find_task_by_ext_id("old-pending")->prompt_ids.empty()) << "unfinished tasks keep their ids";
  EXPECT_FALSE(store.find_task_by_ext_id("new-done")->prompt_ids.empty());
  EXPECT_FALSE(store.find_task_by_ext_id("new-done")->outcome.tokens.empty());
  EXPECT_FALSE(store.find_task_by_ext_id("new-cancelled")->prompt_ids.empty());
  EXPECT_EQ(store.purge_ids(retention_cutoff(Retention::for_days(7), now)), 0) << "nothing left to purge";
  const auto ids = store.id_counts();
  EXPECT_EQ(ids.holding, 3);
  EXPECT_EQ(ids.unfinished, 1);
  EXPECT_EQ(ids.ended, 2);
  // Every ended task (db purge-ids --all, or `none` at startup).
  EXPECT_EQ(store.purge_ids(std::nullopt), 2);
  EXPECT_EQ(store.id_counts().holding, 1);
}

// The purger: once at construction (a store written under `all` brought in line), then periodically.
TEST_F(StoreTest, IdPurgerPurgesAtStartAndThenPeriodically) {
  const auto db = file("purger.db");
  auto store = Store::open(db);
  const int64_t m = store.upsert_model(model("fp"));
  store.finish_task(store.insert_task(id_task("old", m, 1)), TaskStatus::Done, answer(1));
  store.finish_task(store.insert_task(id_task("recent", m, 2)), TaskStatus::Done, answer(2));
  const auto now = std::chrono::system_clock::now();
  set_updated_at(db, "old", iso_utc(now - std::chrono::hours(24 * 31)));
  std::vector<std::string> heard;
  std::mutex heard_mu;
  {
    IdPurger purger(db, Retention::for_days(30), std::chrono::milliseconds(50), [&](const std::string& msg, bool error) {
      std::lock_guard lock(heard_mu);
      heard.push_back((error ? "error: " : "") + msg);
    });
    EXPECT_EQ(purger.purged(), 1);  // at construction, before anything else
    EXPECT_TRUE(store.find_task_by_ext_id("old")->prompt_ids.empty());
    EXPECT_FALSE(store.find_task_by_ext_id("recent")->prompt_ids.empty());
    set_updated_at(db, "recent", iso_utc(now - std::chrono::hours(24 * 40)));  // now old enough
    for (int i = 0; i < 200 && purger.purged() < 2; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    EXPECT_EQ(purger.purged(), 2);
  }
  EXPECT_TRUE(store.find_task_by_ext_id("recent")->prompt_ids.empty());
  std::lock_guard lock(heard_mu);
  ASSERT_FALSE(heard.empty());
  EXPECT_NE(heard.front().find("retention 30 days: wiped the encrypted ids of 1 ended task(s)"), std::string::npos) << heard.front();
  EXPECT_THROW(IdPurger(db, Retention::all()), Error);
}

}  // namespace
}  // namespace eesched::data
