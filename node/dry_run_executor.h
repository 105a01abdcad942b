#pragma once
// Dry run: answers every Assign at once, on the network thread, without loading or running a
// model, so `bench-dispatch` and the daemon tests measure the coordinator alone. A few copies of
// each prompt row's last id stand in for generated tokens.
#include "node/encrypted_models.h"
#include "node/executor.h"

namespace eesched::node {

class DryRunExecutor final : public Executor {
 public:
  // `models` (held by name only) must outlive the executor.
  DryRunExecutor(const ModelSet& models, RunDone done);

  void start() override {}
  void assign(net::Assign a, net::WorkerSession::ConnectionId from) override;
  void cancel(int64_t task_id) override;
  std::size_t drop_queued() override { return 0; }  // nothing ever waits
  int64_t queued() const override { return 0; }
  void stop() override {}
  void join() override {}

 private:
  const ModelSet& models_;
  RunDone done_;
};

}  // namespace eesched::node
