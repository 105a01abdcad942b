// eesched bench-dispatch: the coordinator's own cost. A coordinator and N dry-run workers (they
// answer every Assign at once) run in this process on loopback; clients keep a window of
// submissions in flight. Reported: tasks/s end to end, and the coordinator's overhead from
// Submit received to Assign sent and from Result received to the client's answer.
#include <algorithm>
#include <filesystem>
#include <functional>
#include <iostream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "net/auth.h"
#include "net/blocking_client.h"
#include "net/messages.h"
#include "runtime/synthetic.h"
#include "node/model_row.h"
#include "node/worker_daemon.h"
#include "scheduler/coordinator.h"
#include "tools/commands.h"

namespace eesched::tools {
namespace {

struct BenchDispatchArgs {
  int workers = 16, tasks = 20000, clients = 4, window = 64, threads = 2;
  std::string selector = "models/selector.json";
  bool json = false;
};

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

net::ModelInfo dry_model() {
  const auto c = runtime::synthetic_config("110m");
  net::ModelInfo m;
  m.row = node::model_row("syn110m", "dry-syn110m", c, 4 * c.parameter_count(), "f32", /*encrypted=*/true);
  return m;
}

// One client connection keeping `window` submissions in flight until it has `count` results.
void client_loop(const net::Endpoint& at, int count, int window, int client_index) {
  auto c = net::BlockingClient::connect(at, std::chrono::seconds(5));
  net::TaskRequest r;
  r.model = "syn110m";
  r.prompt_ids = {{11, 12, 13, 14, 15, 16, 17, 18}};
  r.generation.max_new_tokens = 16;
  r.quality = data::Quality::Tolerant;
  int sent = 0, done = 0;
  const auto submit = [&] {
    r.request_id = fmt::format("bench-{}-{}", client_index, sent++);
    c.send(net::to_message(net::Submit{r}));
  };
  while (sent < std::min(window, count)) submit();
  while (done < count) {
    const auto m = c.receive(std::chrono::seconds(30));
    if (!m) throw std::runtime_error("bench-dispatch: no answer for 30 s");
    if (m->type == net::MessageType::Error) throw std::runtime_error("bench-dispatch: " + m->as<net::ErrorMsg>().message);
    if (m->type != net::MessageType::Result) continue;
    ++done;
    if (sent < count) submit();
  }
}

void run(const BenchDispatchArgs& a) {
  const auto dir = std::filesystem::temp_directory_path() / ("eesched-bench-dispatch-" + net::make_nonce().substr(0, 12));
  std::filesystem::create_directories(dir);
  struct Cleanup {
    std::filesystem::path dir;
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } cleanup{dir};
  net::Token::write_new(dir / "token");

  scheduler::CoordinatorOptions co;
  co.listen = {"127.0.0.1", 0};
  co.db = dir / "dispatch.db";
  if (std::filesystem::exists(a.selector)) co.selector = a.selector;
  co.token_file = dir / "token";
  co.threads = a.threads;
  co.explore = 0;
  co.record_timings = true;
  co.max_outstanding = 1 << 20;
  scheduler::Coordinator coordinator(co);
  std::vector<std::unique_ptr<node::WorkerDaemon>> workers;
  std::vector<std::thread> worker_threads;
  std::thread coordinator_thread([&] {
    try {
      coordinator.run();
    } catch (const std::exception& e) {
      spdlog::error("coordinator: {}", e.what());
    }
  });
  // Every thread is stopped and joined on every way out, errors included.
  struct Teardown {
    std::function<void()> fn;
    ~Teardown() { fn(); }
  } teardown{[&] {
    for (auto& w : workers) w->stop();
    for (auto& t : worker_threads)
      if (t.joinable()) t.join();
    coordinator.stop();
    if (coordinator_thread.joinable()) coordinator_thread.join();
  }};
  const net::Endpoint at{"127.0.0.1", coordinator.port()};

  for (int i = 0; i < a.workers; ++i) {
    node::WorkerOptions wo;
    wo.coordinator = at;
    wo.token_file = dir / "token";
    wo.name = fmt::format("dry-{}", i);
    wo.dry_run = true;
    wo.dry_run_models = {dry_model()};
    wo.threads = 1;
    workers.push_back(std::make_unique<node::WorkerDaemon>(wo));
  }
  for (auto& w : workers)
    worker_threads.emplace_back([&w] {
      try {
        w->run();
      } catch (const std::exception& e) {
        spdlog::error("worker {}: {}", w->name(), e.what());
      }
    });
  for (int waited = 0; coordinator.stats().live_workers < a.workers; ++waited) {
    if (waited > 500) throw std::runtime_error("bench-dispatch: workers did not register within 5 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }

  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> clients;
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(a.clients));
  for (int i = 0; i < a.clients; ++i) {
    const int count = a.tasks / a.clients + (i < a.tasks % a.clients ? 1 : 0);
    clients.emplace_back([&, i, count] {
      try {
        client_loop(at, count, a.window, i);
      } catch (...) {
        errors[static_cast<std::size_t>(i)] = std::current_exception();
      }
    });
  }
  for (auto& t : clients) t.join();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto st = coordinator.stats();
  teardown.fn();
  teardown.fn = [] {};
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);

  const double rate = a.tasks / seconds;
  const nlohmann::json j{{"workers", a.workers},
                         {"tasks", a.tasks},
                         {"clients", a.clients},
                         {"window", a.window},
                         {"coordinator_threads", a.threads},
                         {"selector", co.selector.empty() ? "none" : co.selector.string()},
                         {"completed", st.completed},
                         {"seconds", seconds},
                         {"tasks_per_s", rate},
                         {"submit_to_assign_p50_us", percentile(st.submit_to_assign_us, 0.50)},
                         {"submit_to_assign_p99_us", percentile(st.submit_to_assign_us, 0.99)},
                         {"result_to_reply_p50_us", percentile(st.result_to_reply_us, 0.50)},
                         {"result_to_reply_p99_us", percentile(st.result_to_reply_us, 0.99)}};
  if (a.json) {
    std::cout << j.dump() << "\n";
    return;
  }
  std::cout << fmt::format("bench-dispatch: {} dry-run workers, {} tasks from {} clients (window {}), selector {}\n", a.workers,
                           a.tasks, a.clients, a.window, j["selector"].get<std::string>());
  std::cout << fmt::format("  throughput      {:>10.0f} tasks/s ({} completed in {:.2f} s)\n", rate, st.completed, seconds);
  std::cout << fmt::format("  submit->assign  p50 {:>7.0f} us   p99 {:>7.0f} us\n", j["submit_to_assign_p50_us"].get<double>(),
                           j["submit_to_assign_p99_us"].get<double>());
  std::cout << fmt::format("  result->reply   p50 {:>7.0f} us   p99 {:>7.0f} us\n", j["result_to_reply_p50_us"].get<double>(),
                           j["result_to_reply_p99_us"].get<double>());
}

}  // namespace

void register_bench_dispatch(CLI::App& app) {
  auto a = std::make_shared<BenchDispatchArgs>();
  auto* cmd = app.add_subcommand("bench-dispatch",
                                 "coordinator throughput and dispatch overhead with dry-run workers (in-process, loopback)");
  cmd->add_option("--workers", a->workers, "dry-run workers")->capture_default_str()->check(CLI::Range(1, 1024));
  cmd->add_option("--tasks", a->tasks, "tasks to submit")->capture_default_str()->check(CLI::Range(1, 10000000));
  cmd->add_option("--clients", a->clients, "client connections")->capture_default_str()->check(CLI::Range(1, 256));
  cmd->add_option("--window", a->window, "submissions in flight per client")->capture_default_str()->check(CLI::Range(1, 100000));
  cmd->add_option("--threads", a->threads, "coordinator network threads")->capture_default_str()->check(CLI::Range(1, 64));
  cmd->add_option("--selector", a->selector, "selector file (missing: every task runs kv)")->capture_default_str();
  cmd->add_flag("--json", a->json, "print one JSON object");
  cmd->callback([a] { run(*a); });
}

}  // namespace eesched::tools
