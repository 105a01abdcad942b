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

// The arm enters only through its effects (Arm::effects, data/arm_components.h): the weight
// format of the matmuls but q/k, the FFN neurons removed, the draft tokens per step, whether the
// target drafts itself and in which format, and the prior acceptance. Speculative arms use
// `acceptance` (the measured rate of the draft/target pair, or of the target drafting itself for
// qspecK) or, before any measurement, their component's prior (kPriorAcceptance,
// kPriorSelfAcceptance). An arm drafting with a separate model, without `draft`, is estimated as kv.
RooflineEstimate estimate_roofline(const TaskSpec& task, const ModelRow& model, const ModelRow* draft, const HardwareProfile& hw,
                                   const Arm& arm, std::optional<double> acceptance);

}  // namespace eesched::data
