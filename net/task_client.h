#pragma once
// A client's side of one task: submit, wait for the result. Until the coordinator accepts the
// task, any failure (cannot connect, refused) is final. Once accepted, a dropped connection (a
// coordinator restart) is retried: it reconnects and submits the same request_id again, and the
// coordinator reattaches it to the persisted task or answers from the stored result, so a task
// is never run twice for one request.
//
// While it waits, the coordinator relays the task's Tokens as the worker produces them
// (on_tokens), and another thread may cancel the task (cancel).
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>

#include "net/endpoint.h"
#include "net/messages.h"

namespace eesched::net {

struct SubmitOptions {
  std::chrono::milliseconds timeout{600000};         // overall, reconnections included
  std::chrono::milliseconds connect_timeout{3000};
  std::function<void(const Accepted&)> on_accepted;  // e.g. to print the task id
  // Each Tokens message relayed for the task (request_id set), in arrival order, on the calling
  // thread, before submit_and_wait returns the Result (keep it short: the wait does not read
  // meanwhile). Offsets are positions in the row's whole answer and come in order, before the
  // Result: a retried attempt (a worker lost mid-task) continues after what was streamed, under a
  // higher `attempt`, with no position sent twice. Only after a coordinator restart does the task
  // start again at offset 0 (from attempt 1 again), so take a chunk where it goes past what you
  // have, by (row, offset). Tokens are a preview: the
  // Result's tokens are the answer, and a Result may come without any Tokens before it (a
  // request reattached after its task finished, a dry-run worker). An exception it throws leaves
  // submit_and_wait as it is (the task is not cancelled).
  std::function<void(const Tokens&)> on_tokens;
  // Cancellation from another thread: store true, and submit_and_wait (which polls it every
  // ~20 ms) sends Cancel{request_id} to the coordinator and returns the coordinator's Result with
  // status "cancelled" (or "done"/"failed" when the task finished first). When the coordinator
  // does not confirm within 5 s (it is unreachable), or the flag is set before anything was
  // sent, it returns a Result of its own with status "cancelled" and report.error saying so.
  // The coordinator tells the worker running the task, which stops after its current step.
  std::shared_ptr<std::atomic<bool>> cancel;
};

// Why a submission ended without a Result: `code` is the coordinator's error code when it refused
// the task (codes::kNoWorker, kBadMessage, kOverloaded, ... of net/protocol.h), or one of these.
inline constexpr const char* kSubmitTimeout = "timeout";          // no Result within options.timeout
inline constexpr const char* kSubmitUnreachable = "unreachable";  // the coordinator could not be reached (before it accepted)
struct SubmitError : std::runtime_error {
  SubmitError(std::string code_, const std::string& message) : std::runtime_error(message), code(std::move(code_)) {}
  std::string code;
};

// Submits `request` (a request_id is drawn when empty) and returns the coordinator's Result
// (status done, failed or cancelled). Throws SubmitError with the coordinator's reason when it
// refuses the task (an Error frame), when it cannot be reached, or on timeout.
Result submit_and_wait(const Endpoint& coordinator, TaskRequest request, const SubmitOptions& options = {});

// Asks the coordinator which models its live workers hold (net::Status). Throws
// std::runtime_error when it cannot be reached or does not answer within `timeout`.
StatusReply query_status(const Endpoint& coordinator, std::chrono::milliseconds timeout);

}  // namespace eesched::net
