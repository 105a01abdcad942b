#pragma once
// The row a model registers under and the store keeps, from its config: one definition for the
// worker's encrypted models, the sweep's models and bench-dispatch's dry-run model.
#include <cstdint>
#include <string>

#include "data/rows.h"
#include "runtime/config.h"

namespace eesched::node {

// Weights are computed in f32 whatever the checkpoint stores (dtype "f32"); `weight_bytes` is
// what one decoding step streams.
data::ModelRow model_row(const std::string& name, const std::string& fingerprint, const runtime::LlamaConfig& config,
                         int64_t weight_bytes, bool encrypted);

}  // namespace eesched::node
