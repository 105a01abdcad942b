// The daemons end to end on loopback: a coordinator, workers and clients over real TCP sockets,
// with real encrypted models (or dry-run workers where only scheduling is under test).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <future>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "accel/quality.h"
#include "accel/registry.h"
#include "accel/run.h"
#include "data/retention.h"
#include "data/sqlite.h"
#include "data/store.h"
#include "data/time.h"
#include "ee/codec.h"
#include "ee/key.h"
#include "ee/rotate.h"
#include "ee/transform.h"
#include "net/auth.h"
#include "net/blocking_client.h"
#include "net/messages.h"
#include "net/task_client.h"
#include "runtime/tokenizer.h"
#include "node/token_stream.h"
#include "node/worker_daemon.h"
#include "scheduler/coordinator.h"
#include "scheduler/history.h"
#include "scheduler/placement.h"
#include "scheduler/policies.h"
#include "scheduler/selector.h"
#include "tests/daemon_fixtures.h"
#include "tests/ee_fixtures.h"
#include "tests/test_helpers.h"

namespace eesched {
namespace {

using namespace std::chrono_literals;
using testing::ChildProcess;
using testing::EncryptedDeployment;
using testing::LocalCoordinator;
using testing::LocalWorker;
using testing::local_plaintext;
using testing::TempDir;
using ::testing::HasSubstr;

// ---- fixtures ----------------------------------------------------------------------------------

net::ModelInfo dry_model(const std::string& name) {
  net::ModelInfo m;
  m.row.name = name;
  m.row.fingerprint = "dry-" + name;
  m.row.layers = 4, m.row.hidden = 256, m.row.intermediate = 688, m.row.heads = 4, m.row.kv_heads = 2, m.row.vocab = 1024;
  m.row.parameters = 4'000'000, m.row.weight_bytes = 16'000'000, m.row.dtype = "f32", m.row.encrypted = true;
  return m;
}

node::WorkerOptions dry_worker(const net::Endpoint& at, const std::filesystem::path& token, const std::string& name) {
  node::WorkerOptions o;
  o.coordinator = at;
  o.token_file = token;
  o.name = name;
  o.dry_run = true;
  o.dry_run_models = {dry_model("dry")};
  o.threads = 1;
  o.max_backoff = 200ms;
  return o;
}

net::TaskRequest dry_request(const std::string& id) {
  net::TaskRequest r;
  r.request_id = id;
  r.model = "dry";
  r.prompt_ids = {{5, 6, 7, 8}};
  r.generation.max_new_tokens = 4;
  r.quality = data::Quality::Tolerant;
  return r;
}

std::string join(const std::vector<int64_t>& ids) {
  std::string s;
  for (const auto id : ids) {
    if (!s.empty()) s += ',';
    s += std::to_string(id);
  }
  return s;
}

std::string file_bytes(const std::filesystem::path& p) { return std::filesystem::exists(p) ? testing::read_file(p) : ""; }

// Frames read after the Hello, until the connection closes: the first must be an Error with `code`.
void expect_error_then_close(net::BlockingClient& c, const std::string& code) {
  std::optional<net::Message> m;
  do {
    m = c.receive(5s);
    ASSERT_TRUE(m) << "no answer";
  } while (m->type == net::MessageType::Hello);
  ASSERT_EQ(m->type, net::MessageType::Error) << net::to_message(m->payload).dump();
  EXPECT_EQ(m->as<net::ErrorMsg>().code, code) << m->as<net::ErrorMsg>().message;
  EXPECT_THROW(
      {
        while (c.receive(5s)) {
        }
      },
      std::runtime_error);
}

net::SubmitOptions within(std::chrono::milliseconds timeout) {
  net::SubmitOptions o;
  o.timeout = timeout;
  return o;
}

int64_t free_port() {
  // Bind port 0, read the port, release it: good enough for a test on loopback.
  TempDir d;
  net::Token::write_new(d / "t");
  scheduler::CoordinatorOptions o;
  o.listen = {"127.0.0.1", 0};
  o.db = d / "x.db";
  o.token_file = d / "t";
  scheduler::Coordinator c(o);
  return c.port();
}

// ---- tests -------------------------------------------------------------------------------------

// Encrypted tasks through coordinator and worker decrypt to local plaintext generation, for every
// kind of arm; and neither the stores nor the logs hold a plaintext prompt or answer.
TEST(Daemons, EncryptedResultsEqualLocalPlaintextAndNothingPlaintextIsStoredOrLogged) {
  auto log = std::make_shared<std::ostringstream>();
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(*log);
  auto previous = spdlog::default_logger();
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", sink));
  spdlog::set_level(spdlog::level::trace);

  EncryptedDeployment d;
  std::vector<std::vector<int64_t>> prompts, outputs;
  {
    scheduler::CoordinatorOptions co;
    co.selector = testing::source_dir() / "models" / "selector.json";
    LocalCoordinator coordinator(d.dir.path(), co);
    LocalWorker worker(d.worker(coordinator.at(), "w1"));
    coordinator.await_workers(1);

    const std::vector<std::string> texts = {"Fellow-Citizens of the Senate and House of Representatives:",
                                            "The state of the Union is", "Our economy", "In the coming year we will"};
    const std::vector<std::string> arms = {"plain", "kv", "kv+int8", "kv+spec2", "kv+prune30", "kv+qspec6", ""};  // "": the selector's choice
    for (std::size_t i = 0; i < arms.size(); ++i) {
      const auto prompt = d.tokenizer.encode(texts[i % texts.size()]);
      const auto res = net::submit_and_wait(coordinator.at(), d.request(prompt, arms[i], 20));
      ASSERT_EQ(res.status, "done") << res.report.error;
      ASSERT_TRUE(res.report.ok);
      EXPECT_EQ(res.worker, "w1");
      EXPECT_EQ(res.attempts, 1);
      if (!arms[i].empty()) {
        EXPECT_EQ(res.arm, arms[i]);
      }
      ASSERT_EQ(res.report.tokens.size(), 1u);
      const auto decrypted = d.codec.decrypt(res.report.tokens.front());
      EXPECT_EQ(decrypted, local_plaintext(prompt, res.arm, 20, d.tokenizer.eos_id())) << "arm " << res.arm;
      EXPECT_GE(decrypted.size(), 3u);
      prompts.push_back(prompt);
      outputs.push_back(decrypted);
    }
    const auto st = coordinator->stats();
    EXPECT_EQ(st.completed, static_cast<int64_t>(arms.size()));
  }
  spdlog::set_default_logger(previous);

  // The coordinator's store holds the encrypted ids (positive control) ...
  auto store = data::Store::open(d.dir / "coordinator.db");
  const auto done = store.tasks_with_status(data::TaskStatus::Done);
  ASSERT_EQ(done.size(), prompts.size());
  for (std::size_t i = 0; i < done.size(); ++i) EXPECT_EQ(done[i].prompt_ids.front(), d.codec.encrypt(prompts[i]));
  // ... and no file nor log line holds a plaintext prompt or answer (as the ids appear in JSON).
  std::string everything = log->str();
  for (const auto& f : {"coordinator.db", "coordinator.db-wal", "w1.db", "w1.db-wal"}) everything += file_bytes(d.dir / f);
  ASSERT_THAT(everything, HasSubstr(join(d.codec.encrypt(prompts[0])).substr(0, 20)));
  for (const auto& p : prompts) EXPECT_THAT(everything, ::testing::Not(HasSubstr(join(p)))) << join(p);
  for (const auto& o : outputs) EXPECT_THAT(everything, ::testing::Not(HasSubstr(join(o)))) << join(o);
  // The worker logged its runs locally too.
  auto worker_store = data::Store::open(d.dir / "w1.db");
  EXPECT_EQ(worker_store.counts().runs, static_cast<int64_t>(prompts.size()));
}

// A worker with slots runs concurrent tasks in one continuous batch: their runs overlap in time,
// and each answer (greedy or seeded, kv or kv+int8) is what local plaintext generation gives it
// alone. A speculative task, which cannot batch, runs alone between them and is exact too.
TEST(Daemons, ConcurrentTasksShareAWorkersBatchAndEachAnswersAsAlone) {
  EncryptedDeployment d;
  LocalCoordinator coordinator(d.dir.path());
  auto wo = d.worker(coordinator.at(), "w1");
  wo.batching.max_batch = 4;
  LocalWorker worker(std::move(wo));
  coordinator.await_workers(1);
  EXPECT_EQ(coordinator->stats().worker_slots.at("w1"), 4);

  const std::vector<std::string> texts = {"The state of the Union is", "Our economy", "In the coming year we will",
                                          "Fellow-Citizens of the Senate", "We the people", "The budget"};
  const std::vector<std::string> arms = {"kv", "kv", "kv+int8", "kv", "kv+spec2", "kv+int8"};
  std::vector<std::future<net::Result>> pending;
  std::vector<data::GenerationParams> plain_params;
  for (std::size_t i = 0; i < texts.size(); ++i) {
    auto r = d.request(d.tokenizer.encode(texts[i]), arms[i], 24 + 4 * static_cast<int64_t>(i));
    if (i % 2 == 1 && arms[i] != "kv+spec2") r.generation.temperature = 0.8, r.generation.seed = 7 + i;
    auto plain = r.generation;
    plain.stop_ids = {d.tokenizer.eos_id()};
    plain_params.push_back(plain);
    pending.push_back(std::async(std::launch::async, [&coordinator, r] {
      net::SubmitOptions o;
      o.timeout = std::chrono::milliseconds(60000);
      return net::submit_and_wait(coordinator.at(), r, o);
    }));
  }
  for (std::size_t i = 0; i < texts.size(); ++i) {
    const auto res = pending[i].get();
    ASSERT_EQ(res.status, "done") << res.report.error;
    EXPECT_EQ(res.arm, arms[i]);
    EXPECT_EQ(d.codec.decrypt(res.report.tokens.at(0)), local_plaintext(d.tokenizer.encode(texts[i]), arms[i], plain_params[i]))
        << "task " << i << " (" << arms[i] << ")";
  }
  // Batched runs overlapped: some run started before another ended.
  const auto runs = data::Store::open(d.dir / "w1.db").runs_since("2000");
  ASSERT_EQ(runs.size(), texts.size());
  int overlapping = 0;
  for (const auto& a : runs)
    for (const auto& b : runs)
      if (a.id < b.id && a.started_at < b.ended_at && b.started_at < a.ended_at) ++overlapping;
  EXPECT_GT(overlapping, 0) << "no two tasks ran at once";
}

// A worker killed (SIGKILL) mid-task: the task finishes on another worker; one result, one ok run.
TEST(Daemons, TaskOfAKilledWorkerFinishesElsewhereExactlyOnce) {
  EncryptedDeployment d;
  LocalCoordinator coordinator(d.dir.path());
  const auto at = coordinator.at();
  // The victim is a separate process so it can really die mid-task.
  ChildProcess victim({"--log-level", "debug", "worker", "--coordinator", at.str(), "--model", "target=" + d.target.string(),
                       "--token-file", (d.dir / "token").string(), "--threads", "1", "--name", "victim"},
                      d.dir / "victim.log");
  coordinator.await_workers(1);

  const auto prompt = d.tokenizer.encode("The state of the Union is");
  auto request = d.request(prompt, "kv", 1000);  // long enough to kill it mid-way
  request.generation.stop_ids.clear();
  auto pending = std::async(std::launch::async, [&] { return net::submit_and_wait(at, request); });
  for (int i = 0; i < 500 && coordinator->stats().running == 0; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(coordinator->stats().running, 1);
  std::this_thread::sleep_for(200ms);
  victim.signal(SIGKILL);
  EXPECT_EQ(victim.wait(), 128 + SIGKILL);

  LocalWorker survivor(d.worker(at, "survivor"));
  ASSERT_EQ(pending.wait_for(120s), std::future_status::ready);
  const auto res = pending.get();
  ASSERT_EQ(res.status, "done") << res.report.error;
  EXPECT_EQ(res.worker, "survivor");
  EXPECT_EQ(res.attempts, 2);
  EXPECT_EQ(d.codec.decrypt(res.report.tokens.front()), local_plaintext(prompt, "kv", 1000, -1));
  EXPECT_EQ(coordinator->stats().reassigned, 1);

  auto store = data::Store::open(d.dir / "coordinator.db");
  const auto runs = store.runs_since("2000");
  ASSERT_EQ(runs.size(), 1u) << "the killed attempt left no run; the survivor's is the one";
  EXPECT_TRUE(runs[0].ok);
  EXPECT_EQ(store.tasks_with_status(data::TaskStatus::Done).size(), 1u);
}

// The coordinator killed with accepted tasks pending: a restart on the same store completes them,
// and clients that resubmit their request ids get exactly those results.
TEST(Daemons, AcceptedTasksSurviveACoordinatorKill) {
  TempDir dir;
  net::Token::write_new(dir / "token");
  const auto port = free_port();
  const std::string at_text = "127.0.0.1:" + std::to_string(port);
  const net::Endpoint at{"127.0.0.1", static_cast<uint16_t>(port)};
  const std::vector<std::string> args = {"--log-level", "debug", "coordinator", "--listen", at_text, "--db", (dir / "c.db").string(),
                                         "--token-file", (dir / "token").string(), "--worker-timeout-ms", "2000"};
  auto await_listening = [&] {
    for (int i = 0; i < 500; ++i) {
      try {
        net::BlockingClient::connect(at, 200ms);
        return;
      } catch (const std::exception&) {
        std::this_thread::sleep_for(10ms);
      }
    }
    FAIL() << "the coordinator did not start";
  };
  std::vector<std::string> ids = {"restart-a", "restart-b", "restart-c"};
  {
    ChildProcess first(args, dir / "first.log");
    await_listening();
    {
      LocalWorker w(dry_worker(at, dir / "token", "dry-1"));  // makes the model known, then leaves
      for (int i = 0; i < 500 && data::Store::open(dir / "c.db").models().empty(); ++i) std::this_thread::sleep_for(10ms);
    }
    auto client = net::BlockingClient::connect(at, 2s);
    for (const auto& id : ids) client.send(net::to_message(net::Submit{dry_request(id)}));
    int accepted = 0;
    while (accepted < 3) {
      const auto m = client.receive(5s);
      ASSERT_TRUE(m);
      ASSERT_NE(m->type, net::MessageType::Error) << m->as<net::ErrorMsg>().message;
      accepted += m->type == net::MessageType::Accepted;
    }
    first.signal(SIGKILL);
    first.wait();
  }
  EXPECT_EQ(data::Store::open(dir / "c.db").tasks_with_status(data::TaskStatus::Pending).size(), 3u);

  ChildProcess second(args, dir / "second.log");
  await_listening();
  LocalWorker w(dry_worker(at, dir / "token", "dry-2"));
  for (const auto& id : ids) {
    const auto res = net::submit_and_wait(at, dry_request(id), within(30s));
    EXPECT_EQ(res.status, "done");
    EXPECT_EQ(res.request_id, id);
    EXPECT_EQ(res.worker, "dry-2");
  }
  auto store = data::Store::open(dir / "c.db");
  EXPECT_EQ(store.tasks_with_status(data::TaskStatus::Done).size(), 3u);
  EXPECT_EQ(store.counts().tasks, 3) << "resubmitting a request id must not create a task";
  EXPECT_EQ(store.runs_since("2000").size(), 3u);
  second.signal(SIGTERM);
  EXPECT_EQ(second.wait(), 0) << testing::read_file(dir / "second.log");
}

// A coordinator that goes silent without closing its sockets (a frozen or cut-off host): the
// worker notices from the unanswered heartbeats, reconnects, and registers again once it is back.
TEST(Daemons, WorkerNoticesASilentCoordinatorAndRegistersAgain) {
  TempDir dir;
  net::Token::write_new(dir / "token");
  const auto port = free_port();
  const net::Endpoint at{"127.0.0.1", static_cast<uint16_t>(port)};
  ChildProcess coordinator({"coordinator", "--listen", at.str(), "--db", (dir / "c.db").string(), "--token-file",
                            (dir / "token").string(), "--heartbeat-ms", "100"},
                           dir / "coordinator.log");
  const auto registrations = [&] {
    const auto log = testing::read_file(dir / "coordinator.log");
    int n = 0;
    for (auto pos = log.find("registered from"); pos != std::string::npos; pos = log.find("registered from", pos + 1)) ++n;
    return n;
  };
  LocalWorker worker(dry_worker(at, dir / "token", "dry"));
  for (int i = 0; i < 500 && registrations() < 1; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(registrations(), 1);
  // The coordinator logs a registration before the worker has its reply; a task that completes
  // proves the worker is registered and serving, so the freeze below is silence it must notice.
  ASSERT_EQ(net::submit_and_wait(at, dry_request("before-freeze"), within(10s)).status, "done");
  coordinator.signal(SIGSTOP);
  std::this_thread::sleep_for(3s);  // > the worker's silence limit (2 s)
  coordinator.signal(SIGCONT);
  for (int i = 0; i < 1000 && registrations() < 2; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(registrations(), 2) << testing::read_file(dir / "coordinator.log");
  const auto res = net::submit_and_wait(at, dry_request("after-freeze"), within(10s));
  EXPECT_EQ(res.status, "done");
}

// Garbage, oversized frames, bad JSON, a wrong version, an unknown type and a worker with the
// wrong token each get an Error and a closed connection, while another client's tasks complete.
TEST(Daemons, BadPeersAreClosedWhileOthersAreServed) {
  TempDir dir;
  net::Token::write_new(dir / "token");
  LocalCoordinator coordinator(dir.path());
  LocalWorker worker(dry_worker(coordinator.at(), dir / "token", "dry"));
  coordinator.await_workers(1);

  std::atomic<bool> done{false};
  std::atomic<int> completed{0};
  std::thread good([&] {
    for (int i = 0; !done || i < 20; ++i) {
      const auto r = net::submit_and_wait(coordinator.at(), dry_request("good-" + std::to_string(i)), within(10s));
      if (r.status == "done") ++completed;
    }
  });

  const auto frame = [](const std::string& body) { return net::encode_frame(nlohmann::json::parse(body)); };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", net::codes::kTooLarge},
      {std::string("\xff\xff\xff\xff", 4), net::codes::kTooLarge},
      {std::string("\x00\x00\x00\x09{not json", 13), net::codes::kBadJson},
      {frame(R"({"type":"Submit","v":2})"), net::codes::kBadVersion},
      {frame(R"({"type":"Bogus","v":1})"), net::codes::kUnknownType},
      {frame(R"({"type":"Submit","v":1,"task":{"model":"dry","prompt_ids":[[-1]]}})"), net::codes::kBadMessage},
      {frame(R"({"type":"Result","v":1,"task_id":1,"report":{"ok":true,"tokens":[[1]]}})"), net::codes::kUnexpected},
  };
  for (const auto& [bytes, code] : cases) {
    SCOPED_TRACE(code);
    auto c = net::BlockingClient::connect(coordinator.at(), 2s);
    c.send_raw(bytes);
    expect_error_then_close(c, code);
  }

  // A worker with another token: refused, never registered, never assigned anything.
  TempDir other;
  net::Token::write_new(other / "token");
  auto impostor = dry_worker(coordinator.at(), other / "token", "impostor");
  node::WorkerDaemon daemon(impostor);
  try {
    daemon.run();
    ADD_FAILURE() << "an impostor worker must be refused";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("refused the token"));
  }
  EXPECT_EQ(coordinator->stats().live_workers, 1);

  done = true;
  good.join();
  EXPECT_GE(completed.load(), 20);
}

// 200 clients at once: every task completes exactly once.
TEST(Daemons, TwoHundredConcurrentSubmissionsAllCompleteOnce) {
  TempDir dir;
  net::Token::write_new(dir / "token");
  LocalCoordinator coordinator(dir.path());
  std::vector<std::unique_ptr<LocalWorker>> workers;
  for (int i = 0; i < 4; ++i) workers.push_back(std::make_unique<LocalWorker>(dry_worker(coordinator.at(), dir / "token", "dry-" + std::to_string(i))));
  coordinator.await_workers(4);

  constexpr int kClients = 200;
  std::vector<std::future<net::Result>> results;
  for (int i = 0; i < kClients; ++i)
    results.push_back(std::async(std::launch::async, [&, i] {
      return net::submit_and_wait(coordinator.at(), dry_request("c-" + std::to_string(i)), within(60s));
    }));
  std::set<int64_t> task_ids;
  std::set<std::string> request_ids;
  for (auto& f : results) {
    const auto r = f.get();
    EXPECT_EQ(r.status, "done");
    task_ids.insert(r.task_id);
    request_ids.insert(r.request_id);
  }
  EXPECT_EQ(task_ids.size(), static_cast<std::size_t>(kClients));
  EXPECT_EQ(request_ids.size(), static_cast<std::size_t>(kClients));
  auto store = data::Store::open(dir / "coordinator.db");
  EXPECT_EQ(store.tasks_with_status(data::TaskStatus::Done).size(), static_cast<std::size_t>(kClients));
  const auto runs = store.runs_since("2000");
  EXPECT_EQ(runs.size(), static_cast<std::size_t>(kClients));
  std::set<int64_t> run_tasks;
  for (const auto& r : runs) run_tasks.insert(r.task_id);
  EXPECT_EQ(run_tasks.size(), static_cast<std::size_t>(kClients));
}

// Cancel, an unknown model, the wrong key and an arm that cannot apply: clear answers, nothing run.
TEST(Daemons, CancelUnknownModelWrongKeyAndImpossibleArm) {
  TempDir dir;
  net::Token::write_new(dir / "token");
  LocalCoordinator coordinator(dir.path());
  {
    LocalWorker w(dry_worker(coordinator.at(), dir / "token", "dry"));
    coordinator.await_workers(1);
  }
  coordinator.await_workers(0);
  // Pending (its only worker left): cancelled by request id.
  auto client = net::BlockingClient::connect(coordinator.at(), 2s);
  client.send(net::to_message(net::Submit{dry_request("to-cancel")}));
  client.send(net::to_message(net::Cancel{0, "to-cancel"}));
  std::optional<net::Result> result;
  while (!result) {
    const auto m = client.receive(5s);
    ASSERT_TRUE(m);
    if (m->type == net::MessageType::Result) result = m->as<net::Result>();
  }
  EXPECT_EQ(result->status, "cancelled");
  EXPECT_EQ(data::Store::open(dir / "coordinator.db").tasks_with_status(data::TaskStatus::Cancelled).size(), 1u);

  auto unknown = dry_request("unknown");
  unknown.model = "nonesuch";
  try {
    net::submit_and_wait(coordinator.at(), unknown, within(5s));
    ADD_FAILURE() << "an unknown model must be refused";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("no worker has registered model 'nonesuch'"));
  }

  auto keyed = dry_worker(coordinator.at(), dir / "token", "keyed");
  keyed.dry_run_models.front().key_fingerprint = "aaaaaaaaaaaaaaaa";
  LocalWorker w(keyed);
  coordinator.await_workers(1);
  auto wrong_key = dry_request("wrong-key");
  wrong_key.key_fingerprint = "bbbbbbbbbbbbbbbb";
  try {
    net::submit_and_wait(coordinator.at(), wrong_key, within(5s));
    ADD_FAILURE() << "a request under another key must be refused";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("wrong key"));
  }

  // A client's arm no live worker can run (speculative, and no worker offers a draft): failed
  // with the reason rather than left waiting.
  auto pinned = dry_request("pinned-spec");
  pinned.key_fingerprint = "aaaaaaaaaaaaaaaa";
  pinned.arm = "kv+spec2";
  const auto res = net::submit_and_wait(coordinator.at(), pinned, within(5s));
  EXPECT_EQ(res.status, "failed");
  EXPECT_THAT(res.report.error, HasSubstr("does not apply"));
}


// A worker in the test's hands: it registers exactly the hardware and models it is given, over a
// real socket, and shows the Assigns the coordinator sends it.
class ScriptedWorker {
 public:
  ScriptedWorker(const net::Endpoint& at, const net::Token& token, const std::string& name, const data::HardwareProfile& hw,
                 std::vector<net::ModelInfo> models)
      : client_(net::BlockingClient::connect(at, 2s)) {
    const auto hello = next(net::MessageType::Hello).as<net::Hello>();
    net::Register r;
    r.name = name;
    r.hardware = hw;
    r.models = std::move(models);
    r.nonce = net::make_nonce();
    r.proof = token.proof(net::kWorkerProofLabel, hello.nonce, name);
    client_.send(net::to_message(r));
    next(net::MessageType::Registered);
  }
  net::Assign next_assign() { return next(net::MessageType::Assign).as<net::Assign>(); }
  void answer(const net::Assign& a) { answer(a, std::vector<std::vector<int64_t>>(a.prompt_ids.size())); }
  void answer(const net::Assign& a, const std::vector<std::vector<int64_t>>& tokens) {
    net::Result r;
    r.task_id = a.task_id;
    r.attempt = a.attempt;
    r.report.ok = true;
    r.report.tokens = tokens;
    r.report.latency_ms = 1;
    client_.send(net::to_message(r));
  }
  void send(const net::Tokens& t) { client_.send(net::to_message(t)); }

 private:
  net::Message next(net::MessageType type) {
    while (true) {
      auto m = client_.receive(5s);
      if (!m) throw std::runtime_error(std::string("no ") + net::message_type_name(type) + " within 5 s");
      if (m->type == type) return *m;
      if (m->type == net::MessageType::Error) throw std::runtime_error("the coordinator said: " + m->as<net::ErrorMsg>().message);
    }
  }
  net::BlockingClient client_;
};

// What was evaluated is what runs: for stored tasks of the shipped history, the coordinator
// (with the shipped selector, policy meta, no exploration) assigns exactly the arm replay's
// placement picks for the same task on the same worker state. The history's models get measured
// qualities here, so tolerant tasks have lossy arms to take or leave.
TEST(Daemons, TheCoordinatorPlacesAStoredTaskAsReplayDoes) {
  TempDir dir;
  net::Token::write_new(dir / "token");
  const auto token = net::Token::read_file(dir / "token");
  std::filesystem::copy_file(testing::source_dir() / "data" / "history" / "dev.db", dir / "history.db");
  {
    auto store = data::Store::open(dir / "history.db");
    for (auto m : store.models()) {
      m.quality = {{"int8", {1.004, 0.97}}, {"prune30", {1.03, 0.92}}, {"int8+prune30", {1.2, 0.8}}};
      store.upsert_model(m);
    }
  }
  auto store = data::Store::open(dir / "history.db");
  const auto history = scheduler::History::load(store, /*require_all=*/true);
  ASSERT_GT(history.cases.size(), 100u);
  const auto selector_file = testing::source_dir() / "models" / "selector.json";
  const auto selector = scheduler::Selector::load(selector_file);
  const auto meta = scheduler::make_policy("meta", &selector);

  scheduler::CoordinatorOptions o;
  o.db = dir / "history.db";
  o.selector = selector_file;
  o.online = false;  // the static selector, as replay evaluates it (online: the test below)
  LocalCoordinator coordinator(dir.path(), o);
  const std::size_t step = history.cases.size() / 30;
  std::set<std::string> arms;
  int tolerant = 0;
  for (std::size_t i = 0; i < history.cases.size(); i += step) {
    const auto& c = history.cases[i];
    std::mt19937_64 rng(1);
    const auto expected = scheduler::place_case(c, *meta, rng).arm.name;
    std::vector<net::ModelInfo> models{{c.model, "", false}};
    if (c.draft) models.push_back({*c.draft, "", true});
    std::optional<ScriptedWorker> worker;
    worker.emplace(coordinator.at(), token, "replayed-" + std::to_string(i), c.hardware, models);
    coordinator.await_workers(1);
    net::TaskRequest r;
    r.request_id = "same-" + std::to_string(i);
    r.model = c.model.name;
    r.prompt_ids.assign(static_cast<std::size_t>(c.spec.batch), std::vector<int64_t>(static_cast<std::size_t>(c.spec.prompt_tokens), 1));
    r.generation.max_new_tokens = c.spec.generation.max_new_tokens;
    r.generation.temperature = c.spec.generation.temperature;
    r.generation.top_p = c.spec.generation.top_p;
    r.quality = c.spec.quality;
    r.max_ppl_ratio = c.spec.max_ppl_ratio;
    auto client = net::BlockingClient::connect(coordinator.at(), 2s);
    client.send(net::to_message(net::Submit{r}));
    const auto a = worker->next_assign();
    EXPECT_EQ(a.arm, expected) << "task " << c.spec.id << " on " << c.hardware.threads << " threads";
    worker->answer(a);
    std::optional<net::Message> m;
    do m = client.receive(5s);
    while (m && m->type != net::MessageType::Result);
    ASSERT_TRUE(m) << "no result";
    arms.insert(a.arm);
    tolerant += c.spec.quality == data::Quality::Tolerant;
    worker.reset();  // the next case's worker state is the only one
    coordinator.await_workers(0);
  }
  EXPECT_GE(arms.size(), 3u) << "the cases compared cover too few decisions";
  EXPECT_GT(tolerant, 0);
}

// The coordinator learns from the runs it logs (scheduler/online.h): a worker answering far
// faster than the selector predicts has its predictions corrected within a few tasks, and a
// retraining starts in the background every `retrain_every` runs (its verdict is taken on the
// network thread; Online.* in test_scheduler checks what it decides) while tasks keep being served.
TEST(Daemons, TheCoordinatorCorrectsAWorkersPredictionsAndRetrainsInTheBackground) {
  TempDir dir;
  net::Token::write_new(dir / "token");
  const auto token = net::Token::read_file(dir / "token");
  std::filesystem::copy_file(testing::source_dir() / "data" / "history" / "vm-b.db", dir / "history.db");
  auto store = data::Store::open(dir / "history.db");
  const auto history = scheduler::History::load(store, /*require_all=*/true);
  ASSERT_FALSE(history.cases.empty());
  // The case whose kv run took longest: a 1 ms answer is far from any prediction for it.
  const auto& c = *std::max_element(history.cases.begin(), history.cases.end(), [](const auto& a, const auto& b) {
    return a.latency.at("kv") < b.latency.at("kv");
  });

  scheduler::CoordinatorOptions o;
  o.selector = testing::source_dir() / "models" / "selector.json";
  o.train_db = dir / "history.db";
  o.retrain_every = 5;
  LocalCoordinator coordinator(dir.path(), o);
  std::vector<net::ModelInfo> models{{c.model, "", false}};
  if (c.draft) models.push_back({*c.draft, "", true});
  ScriptedWorker worker(coordinator.at(), token, "fast", c.hardware, models);
  coordinator.await_workers(1);
  std::vector<double> predicted;
  for (int i = 0; i < 12; ++i) {
    net::TaskRequest r;
    r.request_id = "learn-" + std::to_string(i);
    r.model = c.model.name;
    r.prompt_ids.assign(static_cast<std::size_t>(c.spec.batch), std::vector<int64_t>(static_cast<std::size_t>(c.spec.prompt_tokens), 1));
    r.generation.max_new_tokens = c.spec.generation.max_new_tokens;
    r.quality = data::Quality::Exact;
    auto client = net::BlockingClient::connect(coordinator.at(), 2s);
    client.send(net::to_message(net::Submit{r}));
    worker.answer(worker.next_assign());  // 1 ms, whatever the arm
    std::optional<net::Message> m;
    do m = client.receive(5s);
    while (m && m->type != net::MessageType::Result);
    ASSERT_TRUE(m) << "no result";
    predicted.push_back(m->as<net::Result>().predicted_ms);
  }
  // The first prediction is the selector's; the last are corrected toward the 1 ms measured.
  EXPECT_GT(predicted.front(), 30.0);
  EXPECT_LT(predicted.back(), predicted.front() / 10);
  // Run 5 started one; the next is due at run 10 if the first has ended by then.
  EXPECT_GE(coordinator->stats().retrains, 1);
}

// ---- streaming ---------------------------------------------------------------------------------

TEST(TokenStream, SendsTheFirstStepAtOnceThenHoldsWithinTheIntervalAndFlushesTheRest) {
  std::vector<net::Tokens> sent;
  node::TokenStream stream(7, 2, 2, [&](const net::Tokens& t) { sent.push_back(t); }, std::chrono::hours(1));
  stream.add({{1}, {2}});
  ASSERT_EQ(sent.size(), 1u) << "the first step goes out at once";
  EXPECT_TRUE(sent[0] == (net::Tokens{7, 2, "", {0, 0}, {{1}, {2}}}));
  stream.add({{3}, {}});
  stream.add({{4, 5}, {}});
  EXPECT_EQ(sent.size(), 1u) << "within the interval: held";
  stream.flush();
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_TRUE(sent[1] == (net::Tokens{7, 2, "", {1, 1}, {{3, 4, 5}, {}}})) << net::to_message(sent[1]).dump();
  stream.flush();
  EXPECT_EQ(sent.size(), 2u) << "nothing pending, nothing sent";
  EXPECT_EQ(stream.messages(), 2);
}

TEST(TokenStream, WithoutAnIntervalEachStepIsOneMessageAndEmptyStepsNone) {
  std::vector<net::Tokens> sent;
  node::TokenStream stream(3, 1, 1, [&](const net::Tokens& t) { sent.push_back(t); }, std::chrono::microseconds(0));
  stream.add({{10}});
  stream.add({{11, 12}});
  stream.add({{}});
  stream.add({{13}});
  stream.flush();
  ASSERT_EQ(sent.size(), 3u);
  EXPECT_EQ(sent[0].offsets, std::vector<int64_t>{0});
  EXPECT_EQ(sent[1].offsets, std::vector<int64_t>{1});
  EXPECT_EQ(sent[2].offsets, std::vector<int64_t>{3});
  EXPECT_EQ(sent[1].tokens, (std::vector<std::vector<int64_t>>{{11, 12}}));
  EXPECT_EQ(sent[2].tokens, (std::vector<std::vector<int64_t>>{{13}}));
}

// A task through a real coordinator and worker streams its encrypted ids as they are produced:
// Tokens relayed with the request id, in order, several for a 32-token answer, and per row their
// concatenation is the Result's answer, which decrypts to local plaintext generation. Batch 1 on
// the plain loop and on a speculative arm, then batch 2 with rows that finish at different steps.
TEST(Daemons, TokensStreamThroughTheCoordinatorAndConcatenateToTheResult) {
  EncryptedDeployment d;
  LocalCoordinator coordinator(d.dir.path());
  LocalWorker worker(d.worker(coordinator.at(), "w1"));
  coordinator.await_workers(1);
  const auto prompt = d.tokenizer.encode("The state of the Union is");
  const auto second = d.tokenizer.encode("Our economy");

  const auto run = [&](const net::TaskRequest& request, const std::string& what) {
    std::vector<net::Tokens> chunks;
    auto o = within(60s);
    o.on_tokens = [&](const net::Tokens& t) { chunks.push_back(t); };
    const auto res = net::submit_and_wait(coordinator.at(), request, o);
    EXPECT_EQ(res.status, "done") << what << ": " << res.report.error;
    EXPECT_GE(chunks.size(), 2u) << what;
    std::vector<std::vector<int64_t>> joined(request.prompt_ids.size());
    for (const auto& c : chunks) {
      EXPECT_EQ(c.task_id, res.task_id) << what;
      EXPECT_EQ(c.attempt, 1) << what;
      EXPECT_EQ(c.request_id, res.request_id) << what;
      EXPECT_EQ(c.offsets.size(), joined.size()) << what;
      EXPECT_EQ(c.tokens.size(), joined.size()) << what;
      for (std::size_t r = 0; r < joined.size() && r < c.tokens.size() && r < c.offsets.size(); ++r) {
        EXPECT_EQ(c.offsets[r], static_cast<int64_t>(joined[r].size())) << what << ": in order, no gap, no overlap";
        joined[r].insert(joined[r].end(), c.tokens[r].begin(), c.tokens[r].end());
      }
    }
    EXPECT_EQ(joined, res.report.tokens) << what;
    return res;
  };

  for (const std::string arm : {"kv", "kv+spec2"}) {
    auto request = d.request(prompt, arm, 32);
    request.generation.stop_ids.clear();  // the whole budget
    const auto res = run(request, arm);
    ASSERT_EQ(res.report.tokens.size(), 1u);
    EXPECT_EQ(res.report.tokens[0].size(), 32u) << arm;
    EXPECT_EQ(d.codec.decrypt(res.report.tokens[0]), local_plaintext(prompt, arm, 32, -1)) << arm;
  }

  // Batch 2: the first row ends at the (encrypted) id it produces fourth, the other runs on.
  const auto plain_first = local_plaintext(prompt, "kv", 32, -1);
  auto request = d.request(prompt, "kv", 32);
  request.prompt_ids.push_back(d.codec.encrypt(second));
  request.generation.stop_ids = {d.codec.encrypt(plain_first.at(3))};
  const auto res = run(request, "batch 2");
  ASSERT_EQ(res.report.tokens.size(), 2u);
  EXPECT_EQ(d.codec.decrypt(res.report.tokens[0]), local_plaintext(prompt, "kv", 32, plain_first.at(3)));
  EXPECT_NE(res.report.tokens[0].size(), res.report.tokens[1].size());
  EXPECT_EQ(coordinator->stats().completed, 3);
}

// The coordinator relays Tokens only from the worker holding the task's current attempt (stale
// attempts, other tasks and a wrong batch are dropped), with the client's request id, before the
// Result; a retry after a lost worker continues after what was streamed: those ids end its prompt,
// its budget is what is left, and its Tokens and Result continue the answer (offsets in the whole
// answer); clients may not send Tokens.
TEST(Daemons, OnlyTheCurrentAttemptsTokensAreRelayedAndARetryContinuesAfterThem) {
  TempDir dir;
  net::Token::write_new(dir / "token");
  const auto token = net::Token::read_file(dir / "token");
  LocalCoordinator coordinator(dir.path());
  const data::HardwareProfile hw{"box", "cpu", 2, 50.0, 10.0, int64_t{8} << 30, int64_t{4} << 30, "2024-01-02T03:04:05Z"};
  std::optional<ScriptedWorker> first;
  first.emplace(coordinator.at(), token, "first", hw, std::vector<net::ModelInfo>{dry_model("dry")});
  coordinator.await_workers(1);

  std::vector<net::Tokens> chunks;
  auto pending = std::async(std::launch::async, [&] {
    auto o = within(10s);
    o.on_tokens = [&](const net::Tokens& t) { chunks.push_back(t); };
    return net::submit_and_wait(coordinator.at(), dry_request("streamed"), o);
  });
  const auto a1 = first->next_assign();
  EXPECT_EQ(a1.resume_from, 0);
  first->send(net::Tokens{a1.task_id, a1.attempt, "", {0}, {{7, 8}}});
  first->send(net::Tokens{a1.task_id, a1.attempt + 1, "", {0}, {{66}}});  // not the current attempt
  first->send(net::Tokens{a1.task_id + 100, 1, "", {0}, {{67}}});        // not a task of this worker
  first->send(net::Tokens{a1.task_id, a1.attempt, "", {0, 0}, {{68}, {69}}});  // not the task's batch
  first->send(net::Tokens{a1.task_id, a1.attempt, "", {2}, {{9}}});

  // The worker is lost mid-task: the task moves to another, which continues after the 3 ids.
  ScriptedWorker second(coordinator.at(), token, "second", hw, {dry_model("dry")});
  coordinator.await_workers(2);
  first.reset();
  const auto a2 = second.next_assign();
  EXPECT_EQ(a2.task_id, a1.task_id);
  EXPECT_EQ(a2.attempt, a1.attempt + 1);
  EXPECT_EQ(a2.resume_from, 3);
  EXPECT_EQ(a2.prompt_ids, (std::vector<std::vector<int64_t>>{{5, 6, 7, 8, 7, 8, 9}}));
  EXPECT_EQ(a2.generation.max_new_tokens, 1);
  second.send(net::Tokens{a2.task_id, a2.attempt, "", {0}, {{10}}});
  second.answer(a2, {{10}});
  ASSERT_EQ(pending.wait_for(10s), std::future_status::ready);
  const auto res = pending.get();
  ASSERT_EQ(res.status, "done") << res.report.error;
  EXPECT_EQ(res.attempts, 2);
  EXPECT_EQ(res.report.tokens, (std::vector<std::vector<int64_t>>{{7, 8, 9, 10}}));
  EXPECT_EQ(res.report.new_tokens, 4);
  ASSERT_EQ(chunks.size(), 3u);
  EXPECT_TRUE(chunks[0] == (net::Tokens{a1.task_id, a1.attempt, "streamed", {0}, {{7, 8}}})) << net::to_message(chunks[0]).dump();
  EXPECT_TRUE(chunks[1] == (net::Tokens{a1.task_id, a1.attempt, "streamed", {2}, {{9}}})) << net::to_message(chunks[1]).dump();
  EXPECT_TRUE(chunks[2] == (net::Tokens{a2.task_id, a2.attempt, "streamed", {3}, {{10}}})) << net::to_message(chunks[2]).dump();

  // Late tokens of a finished task go nowhere, and cost the worker nothing.
  second.send(net::Tokens{a2.task_id, a2.attempt, "", {1}, {{11}}});
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(coordinator->stats().live_workers, 1);
  EXPECT_EQ(data::Store::open(dir / "coordinator.db").runs_since("2000").size(), 1u) << "Tokens are never stored; the Result is";
  // A client that reattaches after the end gets the whole answer from the store.
  const auto again = net::submit_and_wait(coordinator.at(), dry_request("streamed"), within(5s));
  EXPECT_EQ(again.report.tokens, res.report.tokens);
  EXPECT_EQ(again.report.new_tokens, 4);

  auto client = net::BlockingClient::connect(coordinator.at(), 2s);
  client.send(net::to_message(net::Tokens{a2.task_id, 1, "", {0}, {{1}}}));
  expect_error_then_close(client, net::codes::kUnexpected);
}

// Resuming a batch: every row continues from the step all rows reached (the fewest ids streamed
// over the rows); what a row streamed beyond it is regenerated but not relayed again. A task whose
// rows all streamed their whole budget is done when its worker is lost, without another attempt.
TEST(Daemons, ABatchResumesFromTheStepAllRowsReachedAndAFullyStreamedTaskIsDone) {
  TempDir dir;
  net::Token::write_new(dir / "token");
  const auto token = net::Token::read_file(dir / "token");
  LocalCoordinator coordinator(dir.path());
  const data::HardwareProfile hw{"box", "cpu", 2, 50.0, 10.0, int64_t{8} << 30, int64_t{4} << 30, "2024-01-02T03:04:05Z"};
  std::optional<ScriptedWorker> first;
  first.emplace(coordinator.at(), token, "first", hw, std::vector<net::ModelInfo>{dry_model("dry")});
  coordinator.await_workers(1);

  std::vector<net::Tokens> chunks;
  auto batch = dry_request("batch");
  batch.prompt_ids = {{5, 6, 7, 8}, {9, 10}};
  auto pending = std::async(std::launch::async, [&] {
    auto o = within(10s);
    o.on_tokens = [&](const net::Tokens& t) { chunks.push_back(t); };
    return net::submit_and_wait(coordinator.at(), batch, o);
  });
  const auto a1 = first->next_assign();
  first->send(net::Tokens{a1.task_id, a1.attempt, "", {0, 0}, {{1, 2, 3}, {4}}});
  std::optional<ScriptedWorker> second;
  second.emplace(coordinator.at(), token, "second", hw, std::vector<net::ModelInfo>{dry_model("dry")});
  coordinator.await_workers(2);
  first.reset();
  const auto a2 = second->next_assign();
  EXPECT_EQ(a2.resume_from, 1);
  EXPECT_EQ(a2.prompt_ids, (std::vector<std::vector<int64_t>>{{5, 6, 7, 8, 1}, {9, 10, 4}}));
  EXPECT_EQ(a2.generation.max_new_tokens, 3);
  second->send(net::Tokens{a2.task_id, a2.attempt, "", {0, 0}, {{2, 3, 20}, {21}}});
  second->answer(a2, {{2, 3, 20}, {21, 22, 23}});
  ASSERT_EQ(pending.wait_for(10s), std::future_status::ready);
  const auto res = pending.get();
  ASSERT_EQ(res.status, "done") << res.report.error;
  EXPECT_EQ(res.report.tokens, (std::vector<std::vector<int64_t>>{{1, 2, 3, 20}, {4, 21, 22, 23}}));
  EXPECT_EQ(res.report.new_tokens, 8);
  ASSERT_EQ(chunks.size(), 2u);
  EXPECT_TRUE(chunks[0] == (net::Tokens{a1.task_id, a1.attempt, "batch", {0, 0}, {{1, 2, 3}, {4}}})) << net::to_message(chunks[0]).dump();
  EXPECT_TRUE(chunks[1] == (net::Tokens{a2.task_id, a2.attempt, "batch", {3, 1}, {{20}, {21}}})) << net::to_message(chunks[1]).dump();

  // All four ids streamed, then the worker is lost before its Result: done, one attempt.
  std::vector<net::Tokens> full_chunks;
  auto whole = std::async(std::launch::async, [&] {
    auto o = within(10s);
    o.on_tokens = [&](const net::Tokens& t) { full_chunks.push_back(t); };
    return net::submit_and_wait(coordinator.at(), dry_request("all-streamed"), o);
  });
  const auto b = second->next_assign();
  second->send(net::Tokens{b.task_id, b.attempt, "", {0}, {{31, 32, 33, 34}}});
  for (int i = 0; i < 500 && full_chunks.empty(); ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(full_chunks.size(), 1u);
  const auto completed = coordinator->stats().completed;
  second.reset();  // lost before its Result
  ASSERT_EQ(whole.wait_for(10s), std::future_status::ready);
  const auto done = whole.get();
  EXPECT_EQ(done.status, "done") << done.report.error;
  EXPECT_TRUE(done.report.ok);
  EXPECT_EQ(done.report.error, "");
  EXPECT_EQ(done.attempts, 1);
  EXPECT_EQ(done.report.tokens, (std::vector<std::vector<int64_t>>{{31, 32, 33, 34}}));
  EXPECT_EQ(done.report.new_tokens, 4);
  EXPECT_EQ(coordinator->stats().completed, completed + 1);
  EXPECT_EQ(data::Store::open(dir / "coordinator.db").tasks_with_status(data::TaskStatus::Done).size(), 2u);
}

// A worker killed (SIGKILL) mid-stream: the task moves to the other worker, which continues after
// the ids already streamed (they end its prompt; a seeded sampler skips as many draws), so the
// client's stream has no repeated and no missing id, equals the Result, and decrypts to one
// uninterrupted local run: greedy, then seeded sampling. Both workers are real processes.
TEST(Daemons, AWorkerKilledMidStreamIsResumedElsewhereWithNoRepeatedOrMissingToken) {
  EncryptedDeployment d;
  LocalCoordinator coordinator(d.dir.path());
  const auto at = coordinator.at();
  std::map<std::string, std::unique_ptr<ChildProcess>> workers;
  const auto start_worker = [&](const std::string& name) {
    workers[name] = std::make_unique<ChildProcess>(
        std::vector<std::string>{"--log-level", "debug", "worker", "--coordinator", at.str(), "--model", "target=" + d.target.string(),
                                 "--token-file", (d.dir / "token").string(), "--threads", "1", "--name", name},
        d.dir / (name + ".log"));
  };
  start_worker("w1");
  start_worker("w2");
  coordinator.await_workers(2);

  const auto prompt = d.tokenizer.encode("The state of the Union is");
  constexpr int64_t kTokens = 160;  // long enough that the kill lands mid-stream (at the 3rd id)
  int64_t reassigned = 0;
  for (const double temperature : {0.0, 0.9}) {
    const std::string what = temperature > 0 ? "seeded sampling" : "greedy";
    auto request = d.request(prompt, "kv", kTokens);
    request.generation.stop_ids.clear();  // the whole budget
    request.generation = testing::with_sampling(request.generation, temperature, 0, 1.0, 4242);

    std::vector<net::Tokens> chunks;
    int64_t streamed = 0;
    std::string victim;
    auto o = within(120s);
    o.on_tokens = [&](const net::Tokens& t) {
      chunks.push_back(t);
      streamed += static_cast<int64_t>(t.tokens.at(0).size());
      if (!victim.empty() || streamed < 3) return;
      for (const auto& [name, n] : coordinator->stats().worker_tasks)
        if (n > 0) victim = name;  // the one running it
      if (!victim.empty()) workers.at(victim)->signal(SIGKILL);
    };
    const auto res = net::submit_and_wait(at, request, o);
    ASSERT_FALSE(victim.empty()) << what;
    EXPECT_EQ(workers.at(victim)->wait(), 128 + SIGKILL) << what;
    ASSERT_EQ(res.status, "done") << what << ": " << res.report.error;
    EXPECT_EQ(res.attempts, 2) << what << ": the kill must land mid-stream";
    EXPECT_NE(res.worker, victim) << what;
    EXPECT_EQ(coordinator->stats().reassigned, ++reassigned) << what;

    // The stream, in order: each chunk starts where the one before ended (no repeat, no gap),
    // and the new attempt's first chunk continues after what the killed one streamed.
    std::vector<int64_t> joined;
    std::optional<int64_t> resumed_at;
    for (const auto& c : chunks) {
      ASSERT_EQ(c.offsets.size(), 1u) << what;
      EXPECT_EQ(c.offsets[0], static_cast<int64_t>(joined.size())) << what << ": no repeated and no missing token";
      if (c.attempt == 2 && !resumed_at) resumed_at = c.offsets[0];
      joined.insert(joined.end(), c.tokens[0].begin(), c.tokens[0].end());
    }
    ASSERT_TRUE(resumed_at) << what << ": the new attempt streamed nothing";
    EXPECT_GE(*resumed_at, 3) << what << ": the new attempt must continue, not start again";
    ASSERT_EQ(res.report.tokens.size(), 1u);
    EXPECT_EQ(joined, res.report.tokens[0]) << what;
    EXPECT_EQ(static_cast<int64_t>(joined.size()), kTokens) << what;
    EXPECT_EQ(res.report.new_tokens, kTokens) << what;
    auto plain = request.generation;
    plain.stop_ids.clear();
    EXPECT_EQ(d.codec.decrypt(joined), local_plaintext(prompt, "kv", plain)) << what << ": as one uninterrupted run";

    if (temperature == 0.0) {
      start_worker(victim + "-again");  // two workers for the next round
      coordinator.await_workers(2);
    }
  }
}

// A client cancels mid-stream (as the gateway does when its caller goes away or a stop string
// matches): the task ends "cancelled" at once, and its worker stops generating after the step it
// is in rather than finishing the answer. A cancel before anything was sent needs no coordinator.
TEST(Daemons, ACancelMidStreamEndsTheTaskAndStopsItsWorker) {
  EncryptedDeployment d;
  LocalCoordinator coordinator(d.dir.path());
  LocalWorker worker(d.worker(coordinator.at(), "w1"));
  coordinator.await_workers(1);
  constexpr int64_t kLong = 1500;
  auto request = d.request(d.tokenizer.encode("The state of the Union is"), "kv", kLong);
  request.generation.stop_ids.clear();
  auto cancel = std::make_shared<std::atomic<bool>>(false);
  int64_t streamed = 0;
  auto o = within(60s);
  o.cancel = cancel;
  o.on_tokens = [&](const net::Tokens& t) {
    streamed += static_cast<int64_t>(t.tokens.at(0).size());
    if (streamed >= 8) cancel->store(true);
  };
  const auto res = net::submit_and_wait(coordinator.at(), request, o);
  EXPECT_EQ(res.status, "cancelled") << res.report.error;
  EXPECT_GE(streamed, 8);
  EXPECT_LT(streamed, kLong);
  EXPECT_EQ(coordinator->stats().cancelled, 1);
  EXPECT_EQ(data::Store::open(d.dir / "coordinator.db").tasks_with_status(data::TaskStatus::Cancelled).size(), 1u);

  // The worker's own log shows the run ended by the cancel, not by the budget.
  std::vector<data::RunRow> runs;
  for (int i = 0; i < 500 && runs.empty(); ++i) {
    std::this_thread::sleep_for(20ms);
    runs = data::Store::open(d.dir / "w1.db").runs_since("2000");
  }
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_FALSE(runs[0].ok);
  EXPECT_EQ(runs[0].error, "cancelled");

  auto early = std::make_shared<std::atomic<bool>>(true);
  auto o2 = within(5s);
  o2.cancel = early;
  const auto none = net::submit_and_wait({"127.0.0.1", 1}, request, o2);  // nothing listens there: nothing is sent
  EXPECT_EQ(none.status, "cancelled");
  EXPECT_EQ(none.task_id, 0);
}

// ---- retention and key rotation (docs/ee.md, "Keys and retention") ------------------------------

// --retain-ids none: a coordinator keeps a task's encrypted ids only while it is unfinished, and a
// worker never writes any; once tasks end, neither SQLite file holds them (read with SQL and as
// raw bytes), while a pending task keeps its ids through a restart and completes from them.
TEST(Daemons, RetainIdsNoneKeepsIdsOnlyWhileATaskIsUnfinished) {
  EncryptedDeployment d;
  scheduler::CoordinatorOptions co;
  co.retain_ids = data::Retention::none();
  const std::vector<std::string> texts = {"The state of the Union is", "Our economy", "In the coming year we will"};
  std::vector<std::vector<int64_t>> wire_prompts, wire_answers;
  const auto pending_prompt = d.tokenizer.encode("We the people of the United States");
  auto pending = d.request(pending_prompt, "kv", 12);
  pending.request_id = "retain-pending";
  {
    LocalCoordinator coordinator(d.dir.path(), co);
    {
      auto wo = d.worker(coordinator.at(), "w1");
      wo.retain_ids = data::Retention::none();
      LocalWorker worker(std::move(wo));
      coordinator.await_workers(1);
      for (std::size_t i = 0; i < texts.size(); ++i) {
        const auto prompt = d.tokenizer.encode(texts[i]);
        auto r = d.request(prompt, "kv", 16);
        r.request_id = "retain-" + std::to_string(i);
        const auto res = net::submit_and_wait(coordinator.at(), r, within(60s));
        ASSERT_EQ(res.status, "done") << res.report.error;
        EXPECT_EQ(d.codec.decrypt(res.report.tokens.at(0)), local_plaintext(prompt, "kv", 16, d.tokenizer.eos_id()));
        wire_prompts.push_back(r.prompt_ids.at(0));
        wire_answers.push_back(res.report.tokens.at(0));
      }
    }
    coordinator.await_workers(0);
    // No worker now: the task is accepted (the model is known) and waits, in the store.
    auto client = net::BlockingClient::connect(coordinator.at(), 2s);
    client.send(net::to_message(net::Submit{pending}));
    for (bool accepted = false; !accepted;) {
      const auto m = client.receive(5s);
      ASSERT_TRUE(m);
      ASSERT_NE(m->type, net::MessageType::Error) << m->as<net::ErrorMsg>().message;
      accepted = m->type == net::MessageType::Accepted;
    }
  }
  // The files as they are on disk with both daemons stopped.
  std::string bytes;
  for (const auto& f : {"coordinator.db", "coordinator.db-wal", "w1.db", "w1.db-wal"}) bytes += file_bytes(d.dir / f);
  ASSERT_THAT(bytes, HasSubstr(join(pending.prompt_ids.at(0)))) << "the pending task's ids must be there (positive control)";
  for (std::size_t i = 0; i < texts.size(); ++i) {
    EXPECT_THAT(bytes, ::testing::Not(HasSubstr(join(wire_prompts[i])))) << "prompt " << i;
    EXPECT_THAT(bytes, ::testing::Not(HasSubstr(join(wire_answers[i])))) << "answer " << i;
  }
  {
    auto store = data::Store::open(d.dir / "coordinator.db");
    const auto ids = store.id_counts();
    EXPECT_EQ(ids.holding, 1);
    EXPECT_EQ(ids.unfinished, 1);
    data::sql::Database raw((d.dir / "coordinator.db").string());
    auto st = raw.prepare("SELECT prompt_ids, stop_ids, answer_ids, worker, prompt_tokens FROM tasks WHERE status = 'done' ORDER BY id");
    int done = 0;
    while (st.step()) {
      ++done;
      EXPECT_EQ(st.column_text(0), "[]");
      EXPECT_EQ(st.column_text(1), "[]");
      EXPECT_EQ(st.column_text(2), "[]");
      EXPECT_EQ(st.column_text(3), "w1");  // what the scheduler learns from stays: lengths, worker, runs
      EXPECT_GT(st.column_int64(4), 0);
    }
    EXPECT_EQ(done, 3);
    EXPECT_EQ(store.runs_since("2000").size(), 3u);
    auto worker_store = data::Store::open(d.dir / "w1.db");
    EXPECT_EQ(worker_store.id_counts().holding, 0) << "a worker under `none` writes no id";
    EXPECT_EQ(worker_store.counts().runs, 3);
  }
  // A restart: the pending task is dispatched from its stored ids and answers as local plaintext
  // does; then its ids go too. A client reattaching to a task whose ids are gone is told so.
  {
    LocalCoordinator coordinator(d.dir.path(), co);
    auto wo = d.worker(coordinator.at(), "w2");
    wo.retain_ids = data::Retention::none();
    LocalWorker worker(std::move(wo));
    const auto res = net::submit_and_wait(coordinator.at(), pending, within(60s));
    ASSERT_EQ(res.status, "done") << res.report.error;
    EXPECT_EQ(res.worker, "w2");
    EXPECT_EQ(d.codec.decrypt(res.report.tokens.at(0)), local_plaintext(pending_prompt, "kv", 12, d.tokenizer.eos_id()));
    auto again = d.request(d.tokenizer.encode(texts[0]), "kv", 16);
    again.request_id = "retain-0";
    try {
      net::submit_and_wait(coordinator.at(), again, within(10s));
      ADD_FAILURE() << "a task whose ids are gone must not answer with an empty result";
    } catch (const net::SubmitError& e) {
      EXPECT_THAT(e.what(), HasSubstr("no longer kept"));
    }
  }
  EXPECT_EQ(data::Store::open(d.dir / "coordinator.db").id_counts().holding, 0);
  EXPECT_THAT(file_bytes(d.dir / "coordinator.db"), ::testing::Not(HasSubstr(join(pending.prompt_ids.at(0)))));
}

// --retain-ids N: the coordinator's store and a worker's run log lose the ids of tasks that ended
// more than N days ago as each daemon starts; younger and unfinished tasks keep theirs.
TEST(Daemons, RetainIdsDaysPurgesOnlyOldEndedTasksOfCoordinatorAndWorker) {
  TempDir dir;
  net::Token::write_new(dir / "token");
  const auto now = std::chrono::system_clock::now();
  const auto fill = [&](const std::filesystem::path& db) {
    auto store = data::Store::open(db);
    const int64_t m = store.upsert_model(dry_model("dry").row);
    int64_t k = 0;
    for (const std::string& id : std::vector<std::string>{"old-done", "old-pending", "young-done"}) {
      data::TaskRow t;
      t.ext_id = id;
      t.model_id = m;
      t.prompt_tokens = 3;
      t.generation.max_new_tokens = 2;
      t.prompt_ids = {{9000 + ++k, 9100, 9200}};
      t.from_client = db.filename() == "c.db";
      const int64_t tid = store.insert_task(t);
      if (id != "old-pending") {
        data::TaskOutcome o;
        o.tokens = {{7000 + k, 7100}};
        store.finish_task(tid, data::TaskStatus::Done, o);
      }
    }
    data::sql::Database raw(db.string());
    const auto set = [&](const std::string& id, int days) {
      raw.prepare("UPDATE tasks SET updated_at = ? WHERE ext_id = ?")
          .bind_text(1, data::iso_utc(now - std::chrono::hours(24 * days)))
          .bind_text(2, id)
          .run();
    };
    set("old-done", 10), set("old-pending", 10), set("young-done", 2);
  };
  const auto expect_purged = [](const std::filesystem::path& db) {
    auto store = data::Store::open(db);
    EXPECT_TRUE(store.find_task_by_ext_id("old-done")->prompt_ids.empty()) << db;
    EXPECT_TRUE(store.find_task_by_ext_id("old-done")->outcome.tokens.empty()) << db;
    EXPECT_FALSE(store.find_task_by_ext_id("young-done")->prompt_ids.empty()) << db;
    EXPECT_FALSE(store.find_task_by_ext_id("young-done")->outcome.tokens.empty()) << db;
    EXPECT_FALSE(store.find_task_by_ext_id("old-pending")->prompt_ids.empty()) << db;
  };
  fill(dir / "c.db");
  fill(dir / "w.db");
  scheduler::CoordinatorOptions co;
  co.db = dir / "c.db";
  co.retain_ids = data::Retention::for_days(7);
  LocalCoordinator coordinator(dir.path(), co);
  expect_purged(dir / "c.db");
  auto wo = dry_worker(coordinator.at(), dir / "token", "dry-1");
  wo.db = dir / "w.db";
  wo.retain_ids = data::Retention::for_days(7);
  LocalWorker worker(std::move(wo));
  expect_purged(dir / "w.db");
  // The pending client task the coordinator found is recovered and runs.
  const auto res = net::submit_and_wait(coordinator.at(), dry_request("old-pending"), within(30s));
  EXPECT_EQ(res.status, "done");
}

// A key rotation, live: a coordinator, a worker holding the model under the old key (a real
// process, one task at a time) and one holding it re-encrypted under a new key by rotate-key
// (ee/rotate.h). Tasks under both keys are submitted at once; mid-way the old worker gets SIGTERM
// and drains: no task is lost or moved, every old-key task ran on the old worker and every
// new-key one on the new, each decrypting (with its own key) to local plaintext generation.
TEST(Daemons, ARotatedKeyIsServedNextToTheOldOneWhileTheOldKeysWorkerDrains) {
  EncryptedDeployment d;
  const auto new_key = testing::fixed_key(d.key.vocab_size(), 9);
  const ee::Codec new_codec(new_key);
  ee::rotate_model_dir(d.target, d.key, new_key, d.dir / "new" / "target", false);
  ee::rotate_model_dir(d.draft, d.key, new_key, d.dir / "new" / "draft", false);

  LocalCoordinator coordinator(d.dir.path());
  const auto at = coordinator.at();
  ChildProcess old_worker({"--log-level", "debug", "worker", "--coordinator", at.str(), "--model", "target=" + d.target.string(),
                           "--draft", d.draft.string(), "--token-file", (d.dir / "token").string(), "--threads", "1", "--name",
                           "old", "--max-batch", "1", "--db", (d.dir / "old.db").string()},
                          d.dir / "old.log");
  auto wo = d.worker(at, "new");
  wo.models = {{"target", d.dir / "new" / "target"}};
  wo.draft = d.dir / "new" / "draft";
  LocalWorker new_worker(std::move(wo));
  coordinator.await_workers(2);

  const std::vector<std::string> texts = {"The state of the Union is", "Our economy", "In the coming year we will",
                                          "Fellow-Citizens of the Senate", "We the people", "The budget"};
  const std::vector<std::string> arms = {"kv", "kv+int8", "kv", "kv+spec2", "kv", "kv"};
  constexpr int64_t kTokens = 64;  // no stop: every old-key task takes a while
  struct Submitted {
    bool new_key;
    std::vector<int64_t> prompt;
    std::string arm;
    std::future<net::Result> result;
  };
  std::vector<Submitted> all;
  for (std::size_t i = 0; i < texts.size(); ++i)
    for (const bool use_new : {false, true}) {
      const auto prompt = d.tokenizer.encode(texts[i]);
      auto r = d.request(prompt, arms[i], kTokens);
      r.generation.stop_ids.clear();
      if (use_new) {
        r.key_fingerprint = new_key.fingerprint();
        r.prompt_ids = {new_codec.encrypt(prompt)};
      }
      all.push_back({use_new, prompt, arms[i], std::async(std::launch::async, [at, r] {
                       return net::submit_and_wait(at, r, within(120s));
                     })});
    }
  // Mid-way: every task accepted, the old worker has finished some and holds more.
  for (int i = 0; i < 3000 && coordinator->stats().accepted < static_cast<int64_t>(all.size()); ++i) std::this_thread::sleep_for(5ms);
  ASSERT_EQ(coordinator->stats().accepted, static_cast<int64_t>(all.size()));
  int64_t held = 0;
  for (int i = 0; i < 6000; ++i) {
    const auto st = coordinator->stats();
    held = st.worker_tasks.count("old") ? st.worker_tasks.at("old") : 0;
    if (held < static_cast<int64_t>(texts.size())) break;
    std::this_thread::sleep_for(5ms);
  }
  ASSERT_GE(held, 2) << "the old worker finished too fast to drain it mid-way";
  old_worker.signal(SIGTERM);
  EXPECT_EQ(old_worker.wait(), 0) << testing::read_file(d.dir / "old.log");

  for (auto& s : all) {
    ASSERT_EQ(s.result.wait_for(120s), std::future_status::ready);
    const auto res = s.result.get();
    ASSERT_EQ(res.status, "done") << res.report.error;
    EXPECT_EQ(res.worker, s.new_key ? "new" : "old") << "a task ran on the other key's worker";
    EXPECT_EQ(res.attempts, 1);
    const auto& codec = s.new_key ? new_codec : d.codec;
    EXPECT_EQ(codec.decrypt(res.report.tokens.at(0)), local_plaintext(s.prompt, s.arm, kTokens, -1))
        << (s.new_key ? "new" : "old") << " key, " << s.arm;
  }
  const auto st = coordinator->stats();
  EXPECT_EQ(st.completed, static_cast<int64_t>(all.size()));
  EXPECT_EQ(st.reassigned, 0);
  EXPECT_EQ(st.failed, 0);
  EXPECT_EQ(st.live_workers, 1);
  const auto log = testing::read_file(d.dir / "old.log");
  EXPECT_THAT(log, HasSubstr("drained: every task held here has finished"));
  EXPECT_EQ(data::Store::open(d.dir / "old.db").counts().runs, static_cast<int64_t>(texts.size()));
  // The old key is no longer served: a task under it is refused, naming the key the model is held under.
  try {
    net::submit_and_wait(at, d.request(d.tokenizer.encode("Peace"), "kv", 4), within(10s));
    ADD_FAILURE() << "the old key has no worker left";
  } catch (const net::SubmitError& e) {
    EXPECT_THAT(e.what(), HasSubstr(new_key.fingerprint().substr(0, 12)));
  }
}

}  // namespace
}  // namespace eesched
