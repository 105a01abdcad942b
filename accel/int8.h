#pragma once
// int8 weights: symmetric, per output channel (one f32 scale per row of W [out, in]), executed
// by int8 kernels that stream one byte per weight (runtime/gemv.h).
//
// Why per output channel: a row's scale depends only on the multiset of its values, so
// quantization commutes bitwise with every EE permutation (rows move with their scales; a
// column permutation leaves each row's max alone). Groups along the input dimension would not:
// permuting columns regroups them. The q/k projections stay as stored (f32, or bf16/f16 for a
// 16-bit model): EE may rotate their RoPE pairs
// (a 2x2 rotation mixes two rows), and no per-row rounding commutes with that.
#include <string>

#include "runtime/model.h"

namespace eesched::accel {

// Which weights the int8 arm quantizes, by HF name: every linear layer but q_proj and k_proj.
runtime::WeightFormat int8_format(const std::string& hf_name);

// The same model with int8 weights where int8_format says so.
runtime::LlamaModel quantize_int8(const runtime::LlamaModel& model);

}  // namespace eesched::accel
