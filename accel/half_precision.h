#pragma once
// 16-bit weights for an f32 model: every linear weight and the LM head rounded once to bf16 (`bf16`) or f16 (`f16`), streamed by the same kernels that run bf16/f16
// checkpoints (runtime/gemv.h). Half the bytes per token of f32, near-lossless; its quality is
// measured like every lossy arm's (accel/quality.h).
//
// Why it commutes with EE: rounding to nearest is per element and symmetric in sign, so it
// commutes exactly with permutations, sign flips and the q/k pair quarter turns (which map rows
// onto rows, ee/transform.h). The embedding table (one row read per token) stays as it is.
#include <string>

#include "runtime/model.h"

namespace eesched::accel {

// The same model with every linear weight stored in `format` (WeightFormat::BF16 or F16). f16
// refuses a weight beyond its range (65504) with an error.
runtime::LlamaModel to_half_precision(const runtime::LlamaModel& model, runtime::WeightFormat format);

}  // namespace eesched::accel
