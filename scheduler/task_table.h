#pragma once
// The coordinator's table of unfinished tasks and their lifecycle:
//   accepted (persisted first) -> pending -> assigned -> done | failed | cancelled,
// with retries (an attempt that fails, times out or loses its worker is re-queued, up to
// max_attempts, and continues after what earlier attempts already streamed) and recovery (a
// restart re-queues every accepted, unfinished client task). It owns the tasks' state and their
// rows in the store, and sends nothing: the coordinator answers the waiting clients with what
// finish() hands back and tells the workers.
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "data/rows.h"
#include "data/store.h"
#include "net/messages.h"

namespace eesched::net {
class Connection;
}

namespace eesched::scheduler {

using Clock = std::chrono::steady_clock;

// An unfinished task.
struct Task {
  data::TaskRow row;                     // as stored (its prompt ids live in `request` only)
  net::TaskRequest request;              // the client's, unchanged: its GenerationParams go to the worker as they are
  int64_t attempts = 0;                  // attempts started
  std::optional<uint64_t> worker_conn;   // assigned to (connection id), while running
  std::string worker_name;
  std::string arm;
  bool explored = false;
  bool shared = false;  // this attempt shared its worker with other tasks (its latency is not its own)
  double predicted_ms = 0;
  std::optional<double> ppl_ratio;       // the assigned arm's measured ratio (lossy arms)
  std::string policy;
  Clock::time_point submitted_at;
  // When the attempt should have started: workers run one task at a time, so a queued task's
  // timeout counts from the moment the one before it on that worker finished.
  std::optional<Clock::time_point> started_at;
  std::set<int64_t> failed_on;           // worker ids where an attempt failed
  std::string last_error;
  std::vector<std::weak_ptr<net::Connection>> waiters;  // clients to answer
  // The answer as relayed to clients so far, per batch row: the Tokens of this and earlier
  // attempts, in order, each position once (kept whether or not a client is listening). Memory
  // only: after a coordinator restart a task starts from scratch.
  std::vector<std::vector<int64_t>> streamed;
  // Where the current (or next) attempt's new ids start in each row's answer: the first
  // resume_from ids of every row of `streamed` are committed, the attempt's prompts end with them
  // (net::Assign::resume_from), and its Tokens and Result continue after them.
  int64_t resume_from = 0;

  // Records a chunk of the current attempt's Tokens (offsets counted within the attempt) and
  // returns what clients have not been sent yet, offsets in the whole answer; rows with nothing
  // new are empty. Positions already relayed by an earlier attempt are not relayed again.
  net::Tokens record_tokens(const net::Tokens& tk);
  // The first resume_from ids of each row: what earlier attempts committed to.
  std::vector<std::vector<int64_t>> committed() const;
};

// A task that reached its final state: the answer and who waits for it.
struct Finished {
  int64_t task_id = 0;
  net::Result result;
  std::vector<std::weak_ptr<net::Connection>> waiters;
};

// The data a finished task keeps (data::TaskOutcome) and the Result rebuilt from it: the answer
// to a client that reattaches after the task finished comes from stored fields, never from a
// stored frame, so a protocol change does not replay old frames.
data::TaskOutcome outcome_of(const net::Result& result);
net::Result stored_result(const data::TaskRow& row, const std::optional<data::RunRow>& run);

class TaskTable {
 public:
  TaskTable(data::Store& store, int max_attempts) : store_(store), max_attempts_(max_attempts) {}

  std::size_t size() const { return tasks_.size(); }
  std::size_t pending_count() const { return pending_.size(); }
  Task* find(int64_t id);
  std::map<int64_t, Task>& tasks() { return tasks_; }

  // A client's task, persisted before anything else happens to it, then queued. `r.request_id`
  // must be set (the coordinator names anonymous requests).
  Task& accept(net::TaskRequest r, const data::TaskSpec& spec, int64_t model_id, Clock::time_point received);

  // Tasks accepted before a crash or stop and never finished, back in the queue (oldest first).
  // Returns how many. A row that cannot be read back is marked failed.
  int64_t recover();

  // The queue, oldest first; dispatch takes it and gives back what it could not place.
  std::deque<int64_t> take_pending() { return std::exchange(pending_, {}); }
  void requeue(std::deque<int64_t> waiting) { pending_ = std::move(waiting); }
  void drop_pending(int64_t id);

  // An attempt ended without a result. The task is re-queued (first: it waited longest) to
  // continue after the tokens every row has streamed (the fewest over the rows: all rows resume
  // from the same step), or finished as done when they hold the whole answer already (every row
  // streamed max_new_tokens), or, after max_attempts, finished as failed.
  std::optional<Finished> retry(int64_t id, const std::string& error, std::optional<int64_t> failed_worker);
  // Gives up on a task no worker can ever run: its next retry fails it.
  std::optional<Finished> fail_now(int64_t id, const std::string& error);

  // The task's final state, recorded (with its run, in one transaction) and removed from the
  // table. The Result goes to every waiter.
  Finished finish(int64_t id, data::TaskStatus status, net::Result result, const std::optional<data::RunRow>& run);

  // The Result of a task as it stands (status as given): what finish() records and sends.
  net::Result result_of(const Task& t, const std::string& status) const;
  // The client's answer from an attempt's report: the committed ids of earlier attempts, then the
  // attempt's, per row; new_tokens counts the whole answer.
  static net::RunReport whole_answer(const Task& t, net::RunReport attempt);

 private:
  data::Store& store_;
  int max_attempts_;
  std::map<int64_t, Task> tasks_;  // unfinished, by id
  std::deque<int64_t> pending_;    // waiting for a worker, FIFO
};

}  // namespace eesched::scheduler
