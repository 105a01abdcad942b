#pragma once
// The daemons as tests run them (tests/test_daemons.cpp, tests/test_gateway.cpp): a coordinator
// and worker daemons in this process on loopback, the committed demo models encrypted under a
// fixed key, and local plaintext generation to compare encrypted answers with.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "accel/quality.h"
#include "accel/registry.h"
#include "accel/run.h"
#include "ee/codec.h"
#include "ee/key.h"
#include "ee/transform.h"
#include "net/auth.h"
#include "net/messages.h"
#include "node/worker_daemon.h"
#include "runtime/tokenizer.h"
#include "scheduler/coordinator.h"
#include "tests/ee_fixtures.h"
#include "tests/test_helpers.h"

namespace eesched::testing {

using namespace std::chrono_literals;

// A coordinator in this process on a free loopback port.
class LocalCoordinator {
 public:
  explicit LocalCoordinator(const std::filesystem::path& dir) : LocalCoordinator(dir, scheduler::CoordinatorOptions()) {}
  LocalCoordinator(const std::filesystem::path& dir, scheduler::CoordinatorOptions o) {
    o.listen.host = "127.0.0.1";
    o.listen.port = 0;
    if (o.db.empty()) o.db = dir / "coordinator.db";
    o.token_file = dir / "token";
    o.heartbeat = 200ms;
    o.worker_timeout = 2000ms;
    o.explore = 0;
    coordinator_ = std::make_unique<scheduler::Coordinator>(o);
    thread_ = std::thread([this] { coordinator_->run(); });
  }
  ~LocalCoordinator() {
    coordinator_->stop();
    thread_.join();
  }
  net::Endpoint at() const { return {"127.0.0.1", coordinator_->port()}; }
  scheduler::Coordinator& operator*() { return *coordinator_; }
  scheduler::Coordinator* operator->() { return coordinator_.get(); }

  // Waits until `n` workers are registered.
  void await_workers(int64_t n) {
    for (int i = 0; i < 1000 && coordinator_->stats().live_workers != n; ++i) std::this_thread::sleep_for(10ms);
    ASSERT_EQ(coordinator_->stats().live_workers, n);
  }

 private:
  std::unique_ptr<scheduler::Coordinator> coordinator_;
  std::thread thread_;
};

// A worker daemon in this process.
class LocalWorker {
 public:
  explicit LocalWorker(node::WorkerOptions o) : worker_(std::make_unique<node::WorkerDaemon>(std::move(o))) {
    thread_ = std::thread([this] {
      try {
        worker_->run();
      } catch (const std::exception& e) {
        error_ = e.what();
      }
    });
  }
  ~LocalWorker() { stop(); }
  void stop() {
    if (!thread_.joinable()) return;
    worker_->stop();
    thread_.join();
  }
  const std::string& error() const { return error_; }

 private:
  std::unique_ptr<node::WorkerDaemon> worker_;
  std::thread thread_;
  std::string error_;
};

// The committed target and draft, encrypted under one key, and the tokenizer.
struct EncryptedDeployment {
  TempDir dir;
  ee::Key key = testing::fixed_key(testing::target_model().config().vocab_size);
  ee::Codec codec{key};
  runtime::Tokenizer tokenizer = runtime::Tokenizer::load(testing::tokenizer_path());
  std::filesystem::path target = dir / "target", draft = dir / "draft";

  EncryptedDeployment() {
    net::Token::write_new(dir / "token");
    // The owner's measurements ship with the model (models/target/quality.json, from
    // `eesched measure-quality`): without them no lossy arm is admitted.
    ee::EncryptDirOptions with_quality;
    with_quality.quality = accel::read_quality_file(testing::source_dir() / "models" / "target").value();
    ee::encrypt_model_dir(testing::source_dir() / "models" / "target", key, target, with_quality);
    ee::encrypt_model_dir(testing::source_dir() / "models" / "draft", key, draft, false);
  }

  node::WorkerOptions worker(const net::Endpoint& at, const std::string& name) const {
    node::WorkerOptions o;
    o.coordinator = at;
    o.token_file = dir / "token";
    o.models = {{"target", target}};
    o.draft = draft;
    o.name = name;
    o.threads = 1;
    o.db = dir / (name + ".db");
    o.max_backoff = 200ms;
    return o;
  }

  net::TaskRequest request(const std::vector<int64_t>& plain_prompt, const std::string& arm, int64_t max_new_tokens) const {
    net::TaskRequest r;
    r.model = "target";
    r.key_fingerprint = key.fingerprint();
    r.prompt_ids = {codec.encrypt(plain_prompt)};
    r.generation.stop_ids = {codec.encrypt(tokenizer.eos_id())};
    r.generation.max_new_tokens = max_new_tokens;
    r.quality = data::Quality::Tolerant;
    r.max_ppl_ratio = 2.0;  // every measured lossy arm: these tests are about equivariance and delivery, not quality
    r.arm = arm;
    return r;
  }
};

// What plaintext inference gives for the prompt with the arm and the generation parameters (stop
// ids in plaintext), on this machine.
inline std::vector<int64_t> local_plaintext(const std::vector<int64_t>& prompt, const std::string& arm_name,
                                            const data::GenerationParams& generation) {
  accel::ModelPair plain;
  plain.target = std::shared_ptr<const runtime::LlamaModel>(&testing::target_model(), [](const runtime::LlamaModel*) {});
  plain.draft = std::shared_ptr<const runtime::LlamaModel>(&testing::draft_model(), [](const runtime::LlamaModel*) {});
  const auto arm = accel::build_arm(data::parse_arm(arm_name), plain);
  runtime::GenerateOptions o;
  o.generation = generation;
  return accel::run_arm(arm, {prompt}, o).generation.tokens.front();
}

// The same, greedy (eos < 0: no stop).
inline std::vector<int64_t> local_plaintext(const std::vector<int64_t>& prompt, const std::string& arm_name, int64_t max_new_tokens,
                                     int64_t eos) {
  data::GenerationParams g;
  g.max_new_tokens = max_new_tokens;
  if (eos >= 0) g.stop_ids = {eos};
  return local_plaintext(prompt, arm_name, g);
}


}  // namespace eesched::testing
