#include "net/task_client.h"

#include <spdlog/spdlog.h>

#include <stdexcept>
#include <thread>

#include "net/auth.h"
#include "net/blocking_client.h"

namespace eesched::net {
namespace {

// The coordinator said no (bad request, unknown model, wrong key): retrying would not help.
struct Refused : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct TimedOut : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace

Result submit_and_wait(const Endpoint& coordinator, TaskRequest request, const SubmitOptions& options) {
  using Clock = std::chrono::steady_clock;
  if (request.request_id.empty()) request.request_id = "req-" + make_nonce().substr(0, 24);
  const auto deadline = Clock::now() + options.timeout;
  const auto left = [&] { return std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()); };
  auto backoff = std::chrono::milliseconds(100);
  bool accepted = false;
  std::string last_error;
  while (left().count() > 0) {
    try {
      auto client = BlockingClient::connect(coordinator, std::min(options.connect_timeout, left()));
      client.send(to_message(Submit{request}));
      while (true) {
        const auto m = client.receive(left());
        if (!m) throw TimedOut("timed out");
        if (m->type == MessageType::Hello) continue;
        if (m->type == MessageType::Accepted) {
          backoff = std::chrono::milliseconds(100);
          if (!accepted && options.on_accepted) options.on_accepted(m->as<Accepted>());
          accepted = true;
          continue;
        }
        if (m->type == MessageType::Result) return m->as<Result>();
        if (m->type == MessageType::Error) {
          const auto e = m->as<ErrorMsg>();
          // A draining coordinator will be back: wait and resubmit, like a lost connection.
          if (e.code == codes::kShuttingDown) throw std::runtime_error(e.message);
          throw Refused("coordinator refused the task: " + e.message + " (" + e.code + ")");
        }
      }
    } catch (const Refused&) {
      throw;
    } catch (const TimedOut&) {
      break;
    } catch (const std::exception& e) {
      // Before the coordinator has the task, failing fast is kinder than retrying for minutes;
      // once it has it, the task survives a coordinator restart and we wait it out.
      if (!accepted) throw std::runtime_error(e.what());
      last_error = e.what();
      spdlog::warn("{}; retrying in {} ms", last_error, backoff.count());
      std::this_thread::sleep_for(std::min(backoff, std::max(left(), std::chrono::milliseconds(0))));
      backoff = std::min(backoff * 2, std::chrono::milliseconds(2000));
    }
  }
  throw std::runtime_error("no result from " + coordinator.str() + " within " + std::to_string(options.timeout.count()) + " ms" +
                           (last_error.empty() ? std::string() : " (last error: " + last_error + ")"));
}

}  // namespace eesched::net
