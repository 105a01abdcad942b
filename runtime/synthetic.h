#pragma once
// Seeded random-init Llama models of realistic shapes, for speed work (not for text).
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/config.h"

namespace eesched::runtime {

class LlamaModel;

// "25m", "110m", "350m": Llama-style shapes with grouped-query attention and a 32000 vocabulary.
LlamaConfig synthetic_config(const std::string& preset);
std::vector<std::string> synthetic_presets();

// Normal(0, 0.02) linear and embedding weights (output projections scaled by 1/sqrt(2 layers),
// as GPT-2 does), unit norm weights. The same seed gives the same model.
LlamaModel random_model(const LlamaConfig& config, uint64_t seed);

}  // namespace eesched::runtime
