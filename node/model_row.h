#pragma once
// The row a model registers under and the store keeps, from its config: one definition for the
// worker's encrypted models, the sweep's models and bench-dispatch's dry-run model.
#include <cstdint>
#include <string>

#include "data/rows.h"
#include "runtime/config.h"

namespace eesched::node {

// `dtype`: what the float weights are computed from ("f32", "bf16", "f16": a 16-bit checkpoint
// is kept in 16 bits, runtime/model.h); `weight_bytes` is what one decoding step streams.
data::ModelRow model_row(const std::string& name, const std::string& fingerprint, const runtime::LlamaConfig& config,
                         int64_t weight_bytes, const std::string& dtype, bool encrypted);

}  // namespace eesched::node
