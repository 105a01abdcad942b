// node/: executing tasks and the sweep — runs recorded once each, resumable, kill-safe, and
// encrypted sweeps store only encrypted prompt ids.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <thread>
#include <tuple>

#include <nlohmann/json.hpp>

#include "accel/quality.h"
#include "data/code_version.h"
#include "data/error.h"
#include "data/features.h"
#include "data/quality.h"
#include "data/roofline.h"
#include "data/store.h"
#include "ee/codec.h"
#include "ee/key.h"
#include "runtime/tokenizer.h"
#include "node/sweep.h"
#include "node/task_runner.h"
#include "runtime/model.h"
#include "runtime/synthetic.h"
#include "scheduler/history.h"
#include "tests/ee_fixtures.h"
#include "tests/test_helpers.h"

namespace data = eesched::data;
namespace node = eesched::node;
namespace accel = eesched::accel;
using eesched::testing::run_eesched;
using eesched::testing::TempDir;
using ::testing::HasSubstr;

namespace {

// Two tiny models sharing the committed tokenizer, and a suite over them.
struct SweepFixture {
  TempDir dir;
  std::filesystem::path models = dir / "models", suite = dir / "suite.jsonl", db = dir / "runs.db";
  SweepFixture(int new_tokens = 6) {
    const auto tiny = eesched::testing::tiny_model(3);
    tiny.save(models / "tiny");
    // Its owner's measurement (the sweep admits no lossy arm without one), on seeded ids.
    std::vector<int64_t> heldout;
    for (int64_t i = 0; i < 200; ++i) heldout.push_back((i * 7919 + 13) % tiny.config().vocab_size);
    accel::QualityOptions qo;
    qo.transforms = {"int8"};
    qo.context = 64;
    accel::write_quality_file(models / "tiny", accel::measure_quality(tiny, heldout, qo));
    eesched::testing::tiny_model(4).save(models / "tinyd");
    std::filesystem::copy_file(eesched::testing::tokenizer_path(), models / "tiny" / "tokenizer.model");
    std::ofstream out(suite);
    out << R"({"id": "t-text", "model": "tiny", "draft": "tinyd", "prompt": "The state of the Union is", "max_new_tokens": )"
        << new_tokens << "}\n"
        << R"({"id": "t-batch", "model": "tiny", "prompt_tokens": 9, "max_new_tokens": )" << new_tokens
        << R"(, "batch": 2, "temperature": 0.8, "quality": "tolerant"})" << "\n"
        << "# a comment line\n"
        << R"({"id": "t-draft", "model": "tiny", "draft": "tinyd", "prompt_tokens": 5, "max_new_tokens": )" << new_tokens
        << R"(, "quality": "tolerant"})" << "\n";
  }
  node::SweepOptions options(int repeats) const {
    node::SweepOptions o;
    o.suite = suite;
    o.db = db;
    o.models_dir = models;
    o.arms = data::parse_arm_list("plain,kv,kv+int8,kv+spec2");
    o.threads = {1};
    o.repeats = repeats;
    o.hardware_cache = dir / "hw";
    return o;
  }
};

TEST(Sweep, RecordsEveryApplicableRunOnceAndResumes) {
  SweepFixture fx;
  const auto first = node::run_sweep(fx.options(2));
  // t-text (exact, draft): plain, kv, spec2; t-batch (tolerant, batch 2): plain, kv, int8;
  // t-draft (tolerant, draft): all four. Two repeats each.
  EXPECT_EQ(first.planned, (3 + 3 + 4) * 2);
  EXPECT_EQ(first.recorded, first.planned);
  EXPECT_EQ(first.failed, 0);
  EXPECT_EQ(first.refused, 2);
  auto store = data::Store::open(fx.db);
  EXPECT_EQ(store.counts().runs, first.planned);
  EXPECT_EQ(store.counts().tasks, 3);
  const auto runs = store.runs_since("2000-01-01");
  for (const auto& r : runs) {
    EXPECT_TRUE(r.ok) << r.error;
    EXPECT_GT(r.latency_ms, 0);
    EXPECT_EQ(r.acceptance_rate.has_value(), r.arm == "kv+spec2");
  }
  const auto batch = store.find_task_by_ext_id("t-batch");
  ASSERT_TRUE(batch);
  EXPECT_EQ(batch->prompt_ids.size(), 2u);
  EXPECT_EQ(batch->prompt_ids[0], node::synthetic_prompt("t-batch", 9, 1024));
  EXPECT_EQ(batch->status, data::TaskStatus::Done);

  const auto again = node::run_sweep(fx.options(2));
  EXPECT_EQ(again.recorded, 0);
  EXPECT_EQ(again.skipped, first.planned);
  const auto more = node::run_sweep(fx.options(3));  // one more repeat: only the new ones run
  EXPECT_EQ(more.recorded, 10);
  EXPECT_EQ(data::Store::open(fx.db).counts().runs, 30);
}

TEST(Sweep, RacingRepeatsOnlyTheContendersAndResumesTheSameWay) {
  SweepFixture fx;
  auto o = fx.options(3);
  o.race = 1.0;  // only the arm of least median so far stays in the race (ties aside)
  node::SweepProgress last;
  o.progress = [&](const node::SweepProgress& p) { last = p; };
  const auto s = node::run_sweep(o);
  EXPECT_EQ(s.planned, (3 + 3 + 4) * 3);
  // Round 0 measures every arm (10 runs); rounds 1 and 2 one arm per task each.
  EXPECT_EQ(s.recorded, 10 + 3 * 2);
  EXPECT_EQ(s.raced_out, s.planned - s.recorded);
  EXPECT_EQ(last.done, last.total);  // progress's total shrinks as arms drop out
  // Replaying the rule from the store: the arm measured in round r is the one of least median
  // over the rounds before it.
  auto store = data::Store::open(fx.db);
  std::map<int64_t, std::vector<data::RunRow>> by_task;
  for (const auto& r : store.runs_since("2000-01-01")) by_task[r.task_id].push_back(r);
  ASSERT_EQ(by_task.size(), 3u);
  for (const auto& [task, runs] : by_task) {
    for (int round = 1; round < 3; ++round) {
      std::map<std::string, std::vector<double>> before;
      std::vector<std::string> measured;
      for (const auto& r : runs) {
        if (r.repeat_index < round) before[r.arm].push_back(r.latency_ms);
        if (r.repeat_index == round) measured.push_back(r.arm);
      }
      std::string best;
      double best_ms = 1e300;
      for (auto& [arm, ms] : before) {
        std::sort(ms.begin(), ms.end());
        const double median = ms.size() % 2 ? ms[ms.size() / 2] : (ms[ms.size() / 2 - 1] + ms[ms.size() / 2]) / 2;
        if (median < best_ms) best_ms = median, best = arm;
      }
      EXPECT_EQ(measured, std::vector<std::string>{best}) << "task " << task << " round " << round;
    }
  }
  // Resuming reads the recorded medians: the same arms are in the race, nothing runs again.
  const auto again = node::run_sweep(o);
  EXPECT_EQ(again.recorded, 0);
  EXPECT_EQ(again.skipped, s.recorded);
  EXPECT_EQ(again.raced_out, s.raced_out);
  // Without racing every planned repeat runs.
  o.race = 0;
  EXPECT_EQ(node::run_sweep(o).recorded, s.raced_out);
  o.race = 0.5;
  EXPECT_THROW(node::run_sweep(o), data::Error);
}

TEST(Sweep, AdaptiveCapStopsRunsSlowerThanTheBestSoFarAndRecordsThemAsTimeouts) {
  SweepFixture fx(24);  // plain recomputes the whole sequence each step: clearly the slowest
  auto o = fx.options(1);
  o.cap = 1.0;  // stop every run once it is slower than the best median so far
  const auto s = node::run_sweep(o);
  EXPECT_EQ(s.recorded, s.planned);
  EXPECT_GT(s.capped, 0);
  EXPECT_LE(s.capped, s.failed);
  auto store = data::Store::open(fx.db);
  std::map<int64_t, std::vector<data::RunRow>> by_task;  // in the order they were recorded
  for (const auto& r : store.runs_since("2000-01-01")) by_task[r.task_id].push_back(r);
  int64_t capped = 0;
  for (auto& [task, runs] : by_task) {
    std::sort(runs.begin(), runs.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
    ASSERT_FALSE(runs.empty());
    EXPECT_TRUE(runs.front().ok) << "the first run of a task has no incumbent to be capped by";
    EXPECT_NE(runs.front().arm, "plain") << "the first round runs the fastest-expected arm first";
    double best = runs.front().latency_ms;
    for (std::size_t i = 1; i < runs.size(); ++i) {
      const auto& r = runs[i];
      if (!r.ok) {
        EXPECT_THAT(r.error, HasSubstr("timeout")) << r.arm;
        EXPECT_THAT(r.error, HasSubstr("adaptive cap")) << r.arm;
        EXPECT_GE(r.latency_ms, best) << r.arm << ": stopped after the step that crossed the cap";
        capped += 1;
      }
      best = std::min(best, r.latency_ms);
    }
  }
  EXPECT_EQ(capped, s.capped);
  o.cap = 0.5;
  EXPECT_THROW(node::run_sweep(o), data::Error);
}

TEST(Sweep, EncryptedSweepStoresOnlyEncryptedPromptIds) {
  SweepFixture fx;
  const auto key = eesched::ee::Key::generate(1024);
  key.save(fx.dir / "k.eekey", false);
  auto o = fx.options(1);
  o.key_file = (fx.dir / "k.eekey").string();
  o.arms = data::parse_arm_list("kv,kv+spec2");
  const auto s = node::run_sweep(o);
  EXPECT_EQ(s.failed, 0);
  EXPECT_GT(s.recorded, 0);
  auto store = data::Store::open(fx.db);
  for (const auto& m : store.models()) EXPECT_TRUE(m.encrypted) << m.name;
  const auto tok = eesched::runtime::Tokenizer::load(eesched::testing::tokenizer_path());
  const auto plain = tok.encode("The state of the Union is");
  const auto task = store.find_task_by_ext_id("t-text");
  ASSERT_TRUE(task);
  EXPECT_EQ(task->prompt_ids[0], eesched::ee::Codec(key).encrypt(plain));
  EXPECT_NE(task->prompt_ids[0], plain);  // several distinct ids: all fixed points is ~1e-15
}

TEST(Sweep, ARunOverTheTimeLimitIsRecordedAsFailed) {
  SweepFixture fx(100);
  auto o = fx.options(1);
  o.arms = data::parse_arm_list("plain");
  o.time_limit_s = 0.001;
  const auto s = node::run_sweep(o);
  EXPECT_EQ(s.failed, s.recorded);
  for (const auto& r : data::Store::open(fx.db).runs_since("2000")) {
    EXPECT_FALSE(r.ok);
    EXPECT_THAT(r.error, HasSubstr("timeout"));
  }
}

// The sweep killed with SIGKILL mid-way and restarted: it completes with every run exactly once.
TEST(Sweep, SurvivesSigkillAndResumesWithoutDuplicates) {
  SweepFixture fx(48);
  const std::vector<std::string> args = {EESCHED_BINARY, "--log-level", "warn", "bench", "--suite", fx.suite.string(),
                                         "--db", fx.db.string(), "--models-dir", fx.models.string(), "--threads", "1",
                                         "--repeat", "3", "--arms", "plain,kv,kv+int8,kv+spec2"};
  auto spawn = [&] {
    const pid_t pid = fork();
    if (pid == 0) {
      std::vector<char*> argv;
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      freopen("/dev/null", "w", stdout);
      execv(argv[0], argv.data());
      _exit(127);
    }
    return pid;
  };
  const pid_t pid = spawn();
  ASSERT_GT(pid, 0);
  // Kill it once a few runs are in (the store is opened read-write by both; WAL allows it).
  int64_t seen = 0;
  for (int i = 0; i < 3000 && seen < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (std::filesystem::exists(fx.db)) {
      try {
        seen = data::Store::open(fx.db).counts().runs;
      } catch (const data::Error&) {
      }
    }
  }
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  int status = 0;
  waitpid(pid, &status, 0);
  const int64_t at_kill = data::Store::open(fx.db).counts().runs;
  ASSERT_LT(at_kill, 30) << "the sweep finished before it could be killed";

  const pid_t again = spawn();
  waitpid(again, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  auto store = data::Store::open(fx.db);
  const auto runs = store.runs_since("2000");
  EXPECT_EQ(static_cast<int64_t>(runs.size()), 30);
  std::set<std::tuple<int64_t, std::string, int64_t>> keys;
  for (const auto& r : runs) {
    keys.emplace(r.task_id, r.arm, r.repeat_index);
    EXPECT_TRUE(r.ok);
    EXPECT_GT(r.new_tokens, 0);
    EXPECT_FALSE(r.ended_at.empty());
    EXPECT_EQ(r.code_version, data::kCodeVersion);
  }
  EXPECT_EQ(keys.size(), runs.size());
}

TEST(Sweep, CommandLineAndDbStats) {
  SweepFixture fx;
  const std::string common = " --suite " + fx.suite.string() + " --db " + fx.db.string() + " --models-dir " + fx.models.string();
  auto r = run_eesched("--log-level warn bench --arms kv,kv+int8 --threads 1" + common);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("done: 5 runs planned, 5 recorded"));
  auto stats = run_eesched("db stats --db " + fx.db.string());
  EXPECT_EQ(stats.exit_code, 0);
  EXPECT_THAT(stats.output, HasSubstr("3 tasks, 5 runs"));
  EXPECT_THAT(stats.output, HasSubstr("runs by code version: " + std::to_string(data::kCodeVersion) +
                                      " (current): 5 (100.0%); training uses versions >= " +
                                      std::to_string(data::kOldestCompatibleCodeVersion)));
  EXPECT_THAT(stats.output, HasSubstr("kv+int8"));
  EXPECT_THAT(stats.output, HasSubstr("wins"));
  std::ofstream(fx.dir / "bad.jsonl") << "{\"id\": \"a\"}\nnot json\n";
  auto bad = run_eesched("bench --suite " + (fx.dir / "bad.jsonl").string() + " --db " + fx.db.string(), true);
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_THAT(bad.output, HasSubstr("bad.jsonl:1"));
  EXPECT_THAT(bad.output, HasSubstr("bad.jsonl:2"));
  auto missing = run_eesched("db stats --db " + (fx.dir / "none.db").string(), true);
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.output, HasSubstr("no store"));
}

// The offline loop on real (tiny) history: sweep -> train-selector -> replay -> bench-selector.
TEST(Sweep, HistoryTrainsASelectorThatReplayAndBenchSelectorUse) {
  SweepFixture fx;
  const std::string common = " --suite " + fx.suite.string() + " --db " + fx.db.string() + " --models-dir " + fx.models.string();
  ASSERT_EQ(run_eesched("--log-level warn bench --arms plain,kv,kv+int8,kv+spec2 --threads 1" + common).exit_code, 0);
  const auto selector = (fx.dir / "selector.json").string();
  auto trained = run_eesched("train-selector --cv 0 --rounds 20 --db " + fx.db.string() + " --out " + selector);
  ASSERT_EQ(trained.exit_code, 0) << trained.output;
  EXPECT_THAT(trained.output, HasSubstr("3 cases"));
  auto repeated = run_eesched("train-selector --cv 2 --cv-repeats 2 --rounds 20 --threads 1 --no-slices --db " + fx.db.string() +
                              " --out " + (fx.dir / "cv.json").string());
  ASSERT_EQ(repeated.exit_code, 0) << repeated.output;
  EXPECT_THAT(repeated.output, HasSubstr("repeated 2-fold cross-validation over 2 fold splits (seeds 1..2)"));
  auto no_cv = run_eesched("train-selector --cv 0 --cv-repeats 2 --db " + fx.db.string() + " --out " + (fx.dir / "x.json").string(), true);
  EXPECT_EQ(no_cv.exit_code, 1);
  EXPECT_THAT(no_cv.output, HasSubstr("--cv-repeats needs cross-validation"));
  auto replayed = run_eesched("replay --json --db " + fx.db.string() + " --selector " + selector);
  ASSERT_EQ(replayed.exit_code, 0);
  const auto j = nlohmann::json::parse(replayed.output);
  EXPECT_EQ(j["cases"], 3);
  ASSERT_EQ(j["policies"].size(), 7u);
  for (const auto& p : j["policies"]) {
    EXPECT_GE(p["top1"].get<double>(), 0.0);
    EXPECT_GE(p["mean_slowdown"].get<double>(), 1.0);
    if (p["policy"] == "oracle") {
      EXPECT_DOUBLE_EQ(p["top1"].get<double>(), 1.0);
    }
    EXPECT_FALSE(p["slices"].empty());
  }
  // Two stores are two machines: each held out in turn; the per-machine SHAP listing.
  const auto other = fx.dir / "other-machine.db";
  std::filesystem::copy_file(fx.db, other);
  auto by_machine = run_eesched("train-selector --cv 2 --cv-by machine --rounds 20 --threads 1 --explain 3 --db " + fx.db.string() +
                                " --db " + other.string() + " --out " + (fx.dir / "m.json").string());
  ASSERT_EQ(by_machine.exit_code, 0) << by_machine.output;
  EXPECT_THAT(by_machine.output, HasSubstr("leave one machine out (2 machines)"));
  EXPECT_THAT(by_machine.output, HasSubstr("meta by held-out machine"));
  EXPECT_THAT(by_machine.output, HasSubstr("mean |SHAP|"));
  auto one_machine = run_eesched("train-selector --cv 2 --cv-by machine --db " + fx.db.string() + " --out " + (fx.dir / "y.json").string(), true);
  EXPECT_EQ(one_machine.exit_code, 1);
  EXPECT_THAT(one_machine.output, HasSubstr("at least two machines"));
  // The online loop over the stored tasks.
  auto online = run_eesched("--log-level warn replay --online --json --resample --stream 8 --retrain-every 4 --db " + fx.db.string() +
                            " --selector " + selector);
  ASSERT_EQ(online.exit_code, 0) << online.output;
  const auto oj = nlohmann::json::parse(online.output.substr(online.output.rfind("\n{") + 1));
  EXPECT_EQ(oj["stream"], 8);
  EXPECT_EQ(oj["retrains"].size(), 2u);
  EXPECT_GE(oj["checkpoints"].back()["online_vs_oracle"].get<double>(), 1.0);
  auto timed = run_eesched("bench-selector --json --decisions 200 --db " + fx.db.string() + " --selector " + selector);
  ASSERT_EQ(timed.exit_code, 0);
  EXPECT_GT(nlohmann::json::parse(timed.output)["p99_us"].get<double>(), 0.0);
  // --live: the selector decides again, the tasks run from their stored ids, the runs are logged.
  const std::string live = "replay --live --tasks 2 --threads 1 --policies meta --models-dir " + fx.models.string() + " --db " +
                           fx.db.string() + " --selector " + selector;
  auto relived = run_eesched(live);
  ASSERT_EQ(relived.exit_code, 0);
  EXPECT_THAT(relived.output, HasSubstr("2 tasks re-executed with policy meta"));
  int64_t logged = 0;
  for (const auto& r : data::Store::open(fx.db).runs_since("2000"))
    if (r.policy == "replay-meta") {
      ++logged;
      EXPECT_TRUE(r.ok) << r.error;
    }
  EXPECT_EQ(logged, 2);
  // A key the history was not swept with: the models do not match, said plainly.
  const auto key = eesched::ee::Key::generate(1024);
  key.save(fx.dir / "k.eekey", false);
  auto wrong = run_eesched(live + " --key " + (fx.dir / "k.eekey").string(), true);
  EXPECT_EQ(wrong.exit_code, 1);
  EXPECT_THAT(wrong.output, HasSubstr("not the one the history was measured with"));
  auto no_selector = run_eesched("replay --db " + fx.db.string() + " --policies meta", true);
  EXPECT_EQ(no_selector.exit_code, 1);
  EXPECT_THAT(no_selector.output, HasSubstr("needs a selector"));
}


// Every family through the sweep, encrypted as workers run it: a tiny model of each (target from
// a bf16 checkpoint, with its owner's quality figures; a smaller draft of the family sharing its
// vocabulary), every catalog arm that applies recorded, the model rows naming the family, and
// the selector's features and roofline estimates finite for every (task, arm).
TEST(Sweep, EveryFamilySweepsEncryptedWithEveryApplicableArm) {
  TempDir dir;
  const auto models = dir / "models", suite = dir / "suite.jsonl", db = dir / "runs.db";
  std::ofstream out(suite);
  for (const auto& family : eesched::testing::family_names()) {
    auto config = eesched::testing::family_config(family);
    config.torch_dtype = "bfloat16";
    const eesched::runtime::LlamaModel target(config, eesched::testing::family_model(family, 500).weights());
    eesched::runtime::save_checkpoint(target, models / family);
    std::vector<int64_t> heldout;
    for (int64_t i = 0; i < 130; ++i) heldout.push_back((i * 7919 + 13) % config.vocab_size);
    accel::QualityOptions qo;
    qo.context = 64;
    accel::write_quality_file(models / family, accel::measure_quality(eesched::runtime::LlamaModel::load(models / family), heldout, qo));
    eesched::testing::family_model(family, 501, /*draft=*/true).save(models / (family + "-draft"));
    out << R"({"id": ")" << family << R"(-exact", "model": ")" << family << R"(", "draft": ")" << family
        << R"(-draft", "prompt_tokens": 7, "max_new_tokens": 5})" << "\n"
        << R"({"id": ")" << family << R"(-tolerant", "model": ")" << family << R"(", "draft": ")" << family
        << R"(-draft", "prompt_tokens": 12, "max_new_tokens": 5, "quality": "tolerant", "max_ppl_ratio": 1000})" << "\n";
  }
  out.close();
  const auto key = eesched::ee::Key::generate(300);
  key.save(dir / "k.eekey", false);
  node::SweepOptions o;
  o.suite = suite, o.db = db, o.models_dir = models, o.threads = {1}, o.hardware_cache = dir / "hw";
  o.key_file = (dir / "k.eekey").string();
  const auto s = node::run_sweep(o);
  const auto& catalog = data::arm_catalog();
  int64_t lossless = 0, tolerant = 0;
  for (const auto& arm : catalog) {
    lossless += arm.lossless();
    // kv+bf16 and kv+f16 are refused: the target is a bf16 checkpoint already.
    const auto key = data::quality_key(arm);
    tolerant += key != "bf16" && key != "f16";
  }
  ASSERT_LT(tolerant, static_cast<int64_t>(catalog.size())) << "the catalog's 16-bit arms";
  const auto families = static_cast<int64_t>(eesched::testing::family_names().size());
  EXPECT_EQ(s.planned, families * (lossless + tolerant));
  EXPECT_EQ(s.recorded, s.planned);
  EXPECT_EQ(s.failed, 0);

  auto store = data::Store::open(db);
  std::map<std::string, data::ModelRow> rows;
  for (const auto& m : store.models()) rows[m.name] = m;
  for (const auto& family : eesched::testing::family_names()) {
    SCOPED_TRACE(family);
    const auto config = eesched::testing::family_config(family);
    for (const auto& name : {family, family + "-draft"}) {
      ASSERT_TRUE(rows.count(name)) << name;
      const auto& m = rows[name];
      EXPECT_EQ(m.architecture, config.model_type);
      EXPECT_EQ(m.head_dim, config.explicit_head_dim);
      EXPECT_EQ(m.vocab, config.vocab_size);
      // The target's bf16 checkpoint is computed from its 16 bits, the draft's f32 one in f32.
      EXPECT_EQ(m.dtype, name == family ? "bf16" : "f32");
      EXPECT_TRUE(m.encrypted);
      EXPECT_GT(m.weight_bytes, 0);
    }
    EXPECT_FALSE(rows[family].quality.empty());
  }
  for (const auto& r : store.runs_since("2000")) {
    EXPECT_TRUE(r.ok) << r.arm << ": " << r.error;
    EXPECT_EQ(r.new_tokens, 5) << r.arm;
  }

  // What the selector sees: every case complete, every feature of every arm finite where it is
  // defined, the roofline estimate finite and positive.
  const auto history = eesched::scheduler::History::load(store, /*require_all=*/true);
  ASSERT_EQ(history.cases.size(), static_cast<std::size_t>(2 * families));
  const auto& names = data::feature_names();
  for (const auto& c : history.cases) {
    SCOPED_TRACE(c.model.name + " " + c.spec.id);
    EXPECT_EQ(c.latency.size(), c.arms.size());
    EXPECT_EQ(c.arms.size(), static_cast<std::size_t>(c.spec.quality == data::Quality::Exact ? lossless : tolerant));
    ASSERT_TRUE(c.draft);
    for (const auto& arm : c.arms) {
      const auto e = data::estimate_roofline(c.spec, c.model, &*c.draft, c.hardware, arm, c.landmarks.acceptance_for(arm));
      for (double x : {e.weight_mb, e.step_ms, e.prefill_ms, e.forward_passes, e.total_ms}) {
        EXPECT_TRUE(std::isfinite(x) && x > 0) << arm.name << ": " << x;
      }
      const auto f = eesched::scheduler::case_features(c, arm);
      ASSERT_EQ(f.size(), names.size());
      for (std::size_t i = 0; i < f.size(); ++i) {
        const bool may_be_missing = names[i].rfind("landmark_", 0) == 0;
        if (!may_be_missing) {
          EXPECT_TRUE(std::isfinite(f[i])) << arm.name << " " << names[i];
        }
      }
    }
  }
}

}  // namespace
