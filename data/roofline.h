#pragma once
// A roofline estimate of an arm's latency on a task: how many bytes of weights each step
// streams, how many FLOPs it does, and how many sequential forward passes the arm needs, against
// the worker's measured bandwidth and GFLOP/s. Not a prediction (dispatch overheads, cache
// effects and kernel efficiency are what the selector learns on top): a physically grounded
// feature that makes arms comparable on tasks and models history has not seen.
#include <optional>

#include "data/arm.h"
#include "data/hardware.h"
#include "data/store.h"
#include "data/task.h"

namespace eesched::data {

struct RooflineEstimate {
  double weight_mb = 0;       // target weights streamed per decoding step under the arm (MB)
  double step_ms = 0;         // one target decoding step of the whole batch
  double prefill_ms = 0;      // the prompt (and the draft's prefill for speculative arms)
  double forward_passes = 0;  // sequential forward passes, target and draft (dispatch overhead scales with it)
  double total_ms = 0;        // prefill + decoding
};

// Speculative arms use `acceptance` (the measured rate of the draft/target pair, or of the target
// drafting itself for qspecK) or, before any measurement, the prior: a separately trained small
// draft agrees with the target about half the time, the target's own int8 copy almost always.
// A specK arm without `draft` is estimated as kv.
inline constexpr double kPriorAcceptance = 0.5;
inline constexpr double kPriorSelfAcceptance = 0.9;
RooflineEstimate estimate_roofline(const TaskSpec& task, const ModelRow& model, const ModelRow* draft, const HardwareProfile& hw,
                                   const Arm& arm, std::optional<double> acceptance);

}  // namespace eesched::data
