#pragma once
// A client's side of one task: submit, wait for the result. Until the coordinator accepts the
// task, any failure (cannot connect, refused) is final. Once accepted, a dropped connection (a
// coordinator restart) is retried: it reconnects and submits the same request_id again, and the
// coordinator reattaches it to the persisted task or answers from the stored result, so a task
// is never run twice for one request.
#include <chrono>
#include <functional>

#include "net/endpoint.h"
#include "net/messages.h"

namespace eesched::net {

struct SubmitOptions {
  std::chrono::milliseconds timeout{600000};         // overall, reconnections included
  std::chrono::milliseconds connect_timeout{3000};
  std::function<void(const Accepted&)> on_accepted;  // e.g. to print the task id
};

// Submits `request` (a request_id is drawn when empty) and returns the coordinator's Result
// (status done, failed or cancelled). Throws std::runtime_error with the coordinator's reason
// when it refuses the task (an Error frame), or on timeout.
Result submit_and_wait(const Endpoint& coordinator, TaskRequest request, const SubmitOptions& options = {});

}  // namespace eesched::net
