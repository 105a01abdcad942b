// LlamaModel::decode_step: forward() with cache when every row adds one token, which is what
// decoding does on every step. The layers are the same as attention_block/mlp_block's, written
// as loops over raw f32 buffers around the matrix kernels (runtime/gemv.h): at batch 1 a small
// model spends as long in LibTorch's per-operation dispatch (about thirty operations per layer,
// each a few microseconds) as in its matrix products, and that time does not shrink with threads.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "runtime/gemv.h"
#include "runtime/model.h"

namespace eesched::runtime {
namespace {

// out = x * rsqrt(mean(x^2) + eps) * w over n values (RMSNorm, HF's formula).
void rms_norm_row(const float* x, const float* w, float eps, int64_t n, float* out) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i]) * x[i];
  const float r = 1.0f / std::sqrt(static_cast<float>(sum / static_cast<double>(n)) + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * r * w[i];
}

// HF's rotate-half RoPE in place: pairs (i, i + hd/2) turn by the position's angles.
void rope_row(float* x, const float* cos, const float* sin, int64_t hd) {
  const int64_t half = hd / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float a = x[i], b = x[i + half];
    x[i] = a * cos[i] - b * sin[i];
    x[i + half] = b * cos[i + half] + a * sin[i + half];
  }
}

float* f32(at::Tensor& t) { return t.data_ptr<float>(); }

}  // namespace

at::Tensor LlamaModel::decode_step(const at::Tensor& ids, KVCache& cache, const std::vector<int64_t>& slots, LogitsAt which) const {
  const int64_t B = ids.size(0), d = config_.hidden_size, hd = config_.head_dim();
  const int64_t H = config_.num_attention_heads, KV = config_.num_key_value_heads, G = H / KV;
  const int64_t inter = config_.intermediate_size, cap = cache.capacity();
  const float eps = static_cast<float>(config_.rms_norm_eps);
  const float q_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  std::vector<int64_t> pos(static_cast<std::size_t>(B));
  for (int64_t b = 0; b < B; ++b) pos[static_cast<std::size_t>(b)] = cache.length(slots[static_cast<std::size_t>(b)]);

  auto x = embed(ids.reshape({B})).contiguous();  // [B, d], the residual stream
  auto h = at::empty({B, d}, at::kFloat);
  auto attn = at::empty({B, H * hd}, at::kFloat);
  auto act = at::empty({B, inter}, at::kFloat);
  float* xp = f32(x);
  float* hp = f32(h);
  const float* cos_table = rope_cos_.data_ptr<float>();
  const float* sin_table = rope_sin_.data_ptr<float>();

  for (std::size_t li = 0; li < layers_.size(); ++li) {
    const Layer& layer = layers_[li];
    for (int64_t b = 0; b < B; ++b) rms_norm_row(xp + b * d, layer.input_norm.data_ptr<float>(), eps, d, hp + b * d);
    auto qkv = layer.wqkv.apply(h).contiguous();  // [B, (H + 2 KV) hd]
    float* qkvp = f32(qkv);
    const int64_t width = (H + 2 * KV) * hd;
    float* kc = cache.k_[li].data_ptr<float>();
    float* vc = cache.v_[li].data_ptr<float>();
    for (int64_t b = 0; b < B; ++b) {
      float* row = qkvp + b * width;
      if (layer.bqkv.defined()) {
        const float* bias = layer.bqkv.data_ptr<float>();
        for (int64_t i = 0; i < width; ++i) row[i] += bias[i];
      }
      const int64_t p = pos[static_cast<std::size_t>(b)];
      const float* cos = cos_table + p * hd;
      const float* sin = sin_table + p * hd;
      for (int64_t head = 0; head < H + KV; ++head) {  // the q heads, then the k heads
        float* v = row + head * hd;
        if (layer.q_norm.defined())  // Qwen3: RMSNorm over each head's vector, before RoPE
          rms_norm_row(v, (head < H ? layer.q_norm : layer.k_norm).data_ptr<float>(), eps, hd, v);
        rope_row(v, cos, sin, hd);
        if (head < H)
          for (int64_t i = 0; i < hd; ++i) v[i] *= q_scale;
      }
      for (int64_t g = 0; g < KV; ++g) {
        const int64_t at_pos = ((slots[static_cast<std::size_t>(b)] * KV + g) * cap + p) * hd;
        std::copy_n(row + (H + g) * hd, hd, kc + at_pos);
        std::copy_n(row + (H + KV + g) * hd, hd, vc + at_pos);
      }
    }
    // softmax(q K^T) V per (row, query head) over the row's cached positions, including the new
    // one; the heads run on LibTorch's threads once the work is worth a fork.
    float* attnp = f32(attn);
    int64_t longest = 0;
    for (const auto p : pos) longest = std::max(longest, p + 1);
    const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, longest * hd));
    at::parallel_for(0, B * H, grain, [&](int64_t begin, int64_t end) {
      std::vector<float> scores(static_cast<std::size_t>(longest));
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / H, head = task % H, g = head / G;
        const int64_t span = pos[static_cast<std::size_t>(b)] + 1;
        const float* q = qkvp + b * width + head * hd;
        const int64_t slot = slots[static_cast<std::size_t>(b)];
        const float* keys = kc + (slot * KV + g) * cap * hd;
        const float* values = vc + (slot * KV + g) * cap * hd;
        float top = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j < span; ++j) top = std::max(top, scores[static_cast<std::size_t>(j)] = dot(q, keys + j * hd, hd));
        float total = 0.0f;
        for (int64_t j = 0; j < span; ++j) total += scores[static_cast<std::size_t>(j)] = std::exp(scores[static_cast<std::size_t>(j)] - top);
        float* out = attnp + b * H * hd + head * hd;
        std::fill_n(out, hd, 0.0f);
        const float inv = 1.0f / total;
        for (int64_t j = 0; j < span; ++j) axpy(scores[static_cast<std::size_t>(j)] * inv, values + j * hd, out, hd);
      }
    });
    auto o = layer.wo.apply(attn).contiguous();
    axpy(1.0f, o.data_ptr<float>(), xp, B * d);

    for (int64_t b = 0; b < B; ++b) rms_norm_row(xp + b * d, layer.post_norm.data_ptr<float>(), eps, d, hp + b * d);
    auto gate_up = layer.w_gate_up.apply(h).contiguous();  // [B, 2 inter]
    const float* gu = gate_up.data_ptr<float>();
    float* ap = f32(act);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < inter; ++i) {
        const float gate = gu[b * 2 * inter + i];
        ap[b * inter + i] = gate / (1.0f + std::exp(-gate)) * gu[b * 2 * inter + inter + i];  // silu(gate) * up
      }
    auto down = layer.w_down.apply(act).contiguous();
    axpy(1.0f, down.data_ptr<float>(), xp, B * d);
  }
  for (int64_t b = 0; b < B; ++b) cache.set_length(slots[static_cast<std::size_t>(b)], pos[static_cast<std::size_t>(b)] + 1);

  for (int64_t b = 0; b < B; ++b) rms_norm_row(xp + b * d, norm_.data_ptr<float>(), eps, d, hp + b * d);
  auto logits = head_.apply(h);  // [B, vocab]
  return which == LogitsAt::All ? logits.view({B, 1, -1}) : logits;
}

}  // namespace eesched::runtime
