#pragma once
// int8 weights: symmetric, per output channel (one f32 scale per row of W [out, in]), executed
// by int8 kernels that stream one byte per weight (runtime/gemv.h). Every linear weight and the
// LM head are quantized; norms, biases and the embedding table (one row read per token) are not.
//
// Why per output channel: a row's scale depends only on the multiset of its values, so
// quantization commutes bitwise with every EE transform: permutations move rows with their
// scales and leave each row's max alone, and the q/k pair turns (ee/transform.h) map each row
// onto another row of its pair, negated or not. Groups along the input dimension would not:
// permuting columns regroups them.
#include "runtime/model.h"

namespace eesched::accel {

// The same model with every linear weight in int8.
runtime::LlamaModel quantize_int8(const runtime::LlamaModel& model);

}  // namespace eesched::accel
