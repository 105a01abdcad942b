#pragma once
// What an Assign means to this worker: the task it describes (as the runtime, the arm checks and
// the local run log see it) and the Result that answers it.
#include <string>

#include "data/arm.h"
#include "data/task.h"
#include "net/endpoint.h"
#include "net/messages.h"

namespace eesched::node {

struct RunMetrics;

// "HOST:PORT#TASK_ID": the task's id in the worker's own store (task ids are the coordinator's).
std::string external_task_id(const net::Endpoint& coordinator, const net::Assign& a);

// The task as this worker runs it with `arm`. Its quality follows the arm: the coordinator
// enforces the client's quality floor, so a lossy arm is only assigned if the client tolerates it.
data::TaskSpec task_spec(const net::Endpoint& coordinator, const net::Assign& a, const data::Arm& arm);

// The Result answering attempt a.attempt of the task with the run's new ids and measurements.
net::Result result_of(const net::Assign& a, const RunMetrics& m);

}  // namespace eesched::node
