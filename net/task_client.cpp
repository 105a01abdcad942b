#include "net/task_client.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <exception>
#include <optional>
#include <stdexcept>
#include <thread>

#include "net/auth.h"
#include "net/blocking_client.h"

namespace eesched::net {
namespace {

using std::chrono::milliseconds;

// The coordinator said no (bad request, unknown model, wrong key): retrying would not help.
struct Refused : SubmitError {
  using SubmitError::SubmitError;
};
struct TimedOut : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// An exception of the caller's own callback: it leaves submit_and_wait as it was thrown, never
// taken for a lost connection.
struct CallbackFailed {
  std::exception_ptr error;
};

// How often a cancellable wait looks at its flag, and how long a cancelled task waits for the
// coordinator's confirmation before answering for itself.
constexpr milliseconds kCancelPoll{20};
constexpr milliseconds kCancelWait{5000};

template <class F, class... Args>
void call_back(const F& f, const Args&... args) {
  if (!f) return;
  try {
    f(args...);
  } catch (...) {
    throw CallbackFailed{std::current_exception()};
  }
}

Result cancelled_here(const TaskRequest& request, int64_t task_id, const std::string& why) {
  Result r;
  r.task_id = task_id;
  r.request_id = request.request_id;
  r.status = "cancelled";
  r.report.error = why;
  return r;
}

}  // namespace

Result submit_and_wait(const Endpoint& coordinator, TaskRequest request, const SubmitOptions& options) {
  using Clock = std::chrono::steady_clock;
  if (request.request_id.empty()) request.request_id = "req-" + make_nonce().substr(0, 24);
  auto deadline = Clock::now() + options.timeout;
  const auto left = [&] { return std::chrono::duration_cast<milliseconds>(deadline - Clock::now()); };
  const auto cancel_requested = [&] { return options.cancel && options.cancel->load(); };
  bool cancelling = false;  // the flag was seen: the deadline is the confirmation's
  const auto start_cancelling = [&] {
    if (cancelling) return;
    cancelling = true;
    deadline = std::min(deadline, Clock::now() + kCancelWait);
  };
  auto backoff = milliseconds(100);
  bool accepted = false;
  int64_t task_id = 0;
  std::string last_error;
  if (cancel_requested()) return cancelled_here(request, 0, "cancelled before it was submitted");
  try {
    while (left().count() > 0) {
      try {
        auto client = BlockingClient::connect(coordinator, std::min(options.connect_timeout, left()));
        client.send(to_message(Submit{request}));
        bool cancel_sent = false;  // on this connection
        while (true) {
          if (!cancel_sent && cancel_requested()) {
            // After the Submit on the same connection: the coordinator knows the request by then.
            start_cancelling();
            client.send(to_message(Cancel{0, request.request_id}));
            cancel_sent = true;
          }
          const auto wait = options.cancel && !cancel_sent ? std::min(left(), kCancelPoll) : left();
          const auto m = client.receive(std::max(wait, milliseconds(0)));
          if (!m) {
            if (left().count() <= 0) throw TimedOut("timed out");
            continue;
          }
          if (m->type == MessageType::Hello) continue;
          if (m->type == MessageType::Accepted) {
            backoff = milliseconds(100);
            task_id = m->as<Accepted>().task_id;
            if (!accepted) call_back(options.on_accepted, m->as<Accepted>());
            accepted = true;
            continue;
          }
          if (m->type == MessageType::Tokens) {
            call_back(options.on_tokens, m->as<Tokens>());
            continue;
          }
          if (m->type == MessageType::Result) return m->as<Result>();
          if (m->type == MessageType::Error) {
            const auto e = m->as<ErrorMsg>();
            // A draining coordinator will be back: wait and resubmit, like a lost connection.
            if (e.code == codes::kShuttingDown) throw std::runtime_error(e.message);
            throw Refused(e.code, "coordinator refused the task: " + e.message + " (" + e.code + ")");
          }
        }
      } catch (const Refused&) {
        throw;
      } catch (const TimedOut&) {
        break;
      } catch (const CallbackFailed&) {
        throw;
      } catch (const std::exception& e) {
        // Before the coordinator has the task, failing fast is kinder than retrying for minutes;
        // once it has it, the task survives a coordinator restart and we wait it out.
        if (!accepted) {
          if (cancel_requested()) return cancelled_here(request, 0, std::string("cancelled; the submission failed: ") + e.what());
          throw SubmitError(kSubmitUnreachable, e.what());
        }
        last_error = e.what();
        if (cancel_requested()) start_cancelling();
        spdlog::warn("{}; retrying in {} ms", last_error, backoff.count());
        std::this_thread::sleep_for(std::min(backoff, std::max(left(), milliseconds(0))));
        backoff = std::min(backoff * 2, milliseconds(2000));
      }
    }
  } catch (const CallbackFailed& f) {
    std::rethrow_exception(f.error);
  }
  if (cancelling)
    return cancelled_here(request, task_id,
                          "cancelled; the coordinator did not confirm within " + std::to_string(kCancelWait.count()) + " ms" +
                              (last_error.empty() ? std::string() : " (last error: " + last_error + ")"));
  throw SubmitError(kSubmitTimeout, "no result from " + coordinator.str() + " within " + std::to_string(options.timeout.count()) + " ms" +
                                        (last_error.empty() ? std::string() : " (last error: " + last_error + ")"));
}

StatusReply query_status(const Endpoint& coordinator, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto left = [&] {
    return std::max(std::chrono::milliseconds(1),
                    std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()));
  };
  auto client = BlockingClient::connect(coordinator, timeout);
  client.send(to_message(Status{}));
  for (;;) {
    auto m = client.receive(left());
    if (!m) throw std::runtime_error("the coordinator at " + coordinator.str() + " did not answer a status request in time");
    if (m->type == MessageType::Hello) continue;
    if (m->type == MessageType::Error) {
      const auto& e = m->as<ErrorMsg>();
      throw std::runtime_error("the coordinator refused a status request: " + e.code + ": " + e.message);
    }
    return std::move(m->as<StatusReply>());
  }
}

}  // namespace eesched::net
