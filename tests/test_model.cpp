// LlamaModel against a naive float64 reference written here with scalar loops, the KV-cache
// paths (prefill, decoding, uneven batches, rollback) against full recomputation, batching
// against sequences run alone, error reporting, and save/load round trips.
#include "runtime/model.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/config.h"
#include "runtime/error.h"
#include "tests/test_helpers.h"
#include "runtime/gemv.h"
#include "runtime/generate.h"
#include "runtime/safetensors.h"
#include "runtime/sampling.h"
#include "runtime/synthetic.h"

namespace fs = std::filesystem;
using eesched::runtime::Error;
using eesched::runtime::generate;
using eesched::runtime::GenerateOptions;
using eesched::runtime::KVCache;
using eesched::runtime::LlamaConfig;
using eesched::runtime::LlamaModel;
using eesched::runtime::LlamaWeights;
using eesched::runtime::LogitsAt;
using ::testing::HasSubstr;

namespace {

using eesched::testing::error_of;

constexpr double kTol = 1e-5;

// ---------------------------------------------------------------------------------------------
// Tiny models.

struct Variant {
  const char* name;
  bool gqa;   // num_key_value_heads 2 of 4 heads, else 4 (MHA)
  bool tied;  // tie_word_embeddings
};

const std::vector<Variant>& variants() {
  static const std::vector<Variant> v = {
      {"gqa_tied", true, true},
      {"gqa_untied", true, false},
      {"mha_tied", false, true},
      {"mha_untied", false, false},
  };
  return v;
}

LlamaConfig tiny_config(bool gqa, bool tied) {
  LlamaConfig c;
  c.vocab_size = 37;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = gqa ? 2 : 4;
  c.max_position_embeddings = 64;
  c.rms_norm_eps = 1e-4;   // not the default: the config must actually be used
  c.rope_theta = 500.0;    // not the default either
  c.tie_word_embeddings = tied;
  c.validate();
  return c;
}

// random_model's weights (std 0.02) make attention nearly uniform and logits tiny, which would
// hide RoPE, masking and GQA mistakes. Scale every matrix by 10 (attention scores of order 1,
// logits of order 1) and give every norm a non-trivial weight 1 + 0.1 * N(0, 1).
LlamaModel make_model(const LlamaConfig& config, uint64_t seed) {
  LlamaModel base = eesched::runtime::random_model(config, seed);
  LlamaWeights w = base.weights();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed + 1000);
  auto scaled = [](const at::Tensor& t) { return (t * 10.0).contiguous(); };
  auto norm = [&](const at::Tensor& t) { return at::randn(t.sizes(), gen, at::kFloat) * 0.1 + 1.0; };
  w.embed_tokens = scaled(w.embed_tokens);
  if (w.lm_head.defined()) w.lm_head = scaled(w.lm_head);
  w.norm = norm(w.norm);
  for (auto& l : w.layers) {
    l.input_layernorm = norm(l.input_layernorm);
    l.post_attention_layernorm = norm(l.post_attention_layernorm);
    l.q_proj = scaled(l.q_proj);
    l.k_proj = scaled(l.k_proj);
    l.v_proj = scaled(l.v_proj);
    l.o_proj = scaled(l.o_proj);
    l.gate_proj = scaled(l.gate_proj);
    l.up_proj = scaled(l.up_proj);
    l.down_proj = scaled(l.down_proj);
    // Biases of order 1 and non-trivial per-head norm weights, so that each feature shows.
    for (at::Tensor* b : {&l.q_bias, &l.k_bias, &l.v_bias})
      if (b->defined()) *b = at::randn(b->sizes(), gen, at::kFloat);
    for (at::Tensor* n : {&l.q_norm, &l.k_norm})
      if (n->defined()) *n = norm(*n);
  }
  return LlamaModel(config, w);
}

// Deep copy of a model's weights (weights() hands out views into the model's storage).
LlamaWeights cloned_weights(const LlamaModel& model) {
  LlamaWeights w = model.weights();
  auto c = [](at::Tensor& t) {
    if (t.defined()) t = t.clone().contiguous();
  };
  c(w.embed_tokens);
  c(w.norm);
  c(w.lm_head);
  for (auto& l : w.layers) {
    for (at::Tensor* t : {&l.input_layernorm, &l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj,
                          &l.post_attention_layernorm, &l.gate_proj, &l.up_proj, &l.down_proj, &l.q_bias,
                          &l.k_bias, &l.v_bias, &l.q_norm, &l.k_norm})
      c(*t);
  }
  return w;
}

std::vector<int64_t> random_ids(int64_t n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> dist(0, vocab - 1);
  std::vector<int64_t> ids(static_cast<std::size_t>(n));
  for (auto& id : ids) id = dist(rng);
  return ids;
}

at::Tensor row_tensor(const std::vector<int64_t>& ids) {
  return at::tensor(ids, at::kLong).view({1, static_cast<int64_t>(ids.size())});
}

// Right-padded [B, T] ids, padding with `pad` (deliberately not 0, so a leak would show).
at::Tensor padded(const std::vector<std::vector<int64_t>>& rows, int64_t pad) {
  std::size_t T = 0;
  for (const auto& r : rows) T = std::max(T, r.size());
  auto ids = at::full({static_cast<int64_t>(rows.size()), static_cast<int64_t>(T)}, pad, at::kLong);
  auto acc = ids.accessor<int64_t, 2>();
  for (std::size_t b = 0; b < rows.size(); ++b)
    for (std::size_t t = 0; t < rows[b].size(); ++t) acc[static_cast<int64_t>(b)][static_cast<int64_t>(t)] = rows[b][t];
  return ids;
}

std::vector<int64_t> concat(std::vector<int64_t> a, const std::vector<int64_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::vector<int64_t> slice(const std::vector<int64_t>& v, std::size_t begin, std::size_t end) {
  return std::vector<int64_t>(v.begin() + static_cast<std::ptrdiff_t>(begin), v.begin() + static_cast<std::ptrdiff_t>(end));
}

// Max |a - b| over two float tensors of the same shape (checked).
double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  if (a.sizes() != b.sizes()) return INFINITY;
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// ---------------------------------------------------------------------------------------------
// Naive float64 reference: plain loops over std::vector<double>, nothing from the runtime but
// the weight values.

using Vec = std::vector<double>;

struct Matrix {  // row-major [rows, cols], HF [out, in]
  int64_t rows = 0, cols = 0;
  Vec data;
  double at(int64_t r, int64_t c) const { return data[static_cast<std::size_t>(r * cols + c)]; }
};

Matrix to_matrix(const at::Tensor& t) {
  EXPECT_EQ(t.dim(), 2);
  EXPECT_EQ(t.scalar_type(), at::kFloat);
  Matrix m;
  m.rows = t.size(0);
  m.cols = t.size(1);
  auto acc = t.accessor<float, 2>();
  m.data.reserve(static_cast<std::size_t>(m.rows * m.cols));
  for (int64_t r = 0; r < m.rows; ++r)
    for (int64_t c = 0; c < m.cols; ++c) m.data.push_back(static_cast<double>(acc[r][c]));
  return m;
}

Vec to_vec(const at::Tensor& t) {
  EXPECT_EQ(t.dim(), 1);
  EXPECT_EQ(t.scalar_type(), at::kFloat);
  auto acc = t.accessor<float, 1>();
  Vec v;
  for (int64_t i = 0; i < t.size(0); ++i) v.push_back(static_cast<double>(acc[i]));
  return v;
}

struct RefLayer {
  Vec input_norm, post_norm;
  Matrix q, k, v, o, gate, up, down;
  Vec q_bias, k_bias, v_bias;  // empty: none
  Vec q_norm, k_norm;          // empty: none
};

struct RefModel {
  LlamaConfig config;
  Matrix embed, head;
  Vec norm;
  std::vector<RefLayer> layers;
};

RefModel reference_of(const LlamaModel& model) {
  RefModel r;
  r.config = model.config();
  const LlamaWeights w = model.weights();
  r.embed = to_matrix(w.embed_tokens);
  r.head = r.config.tie_word_embeddings ? r.embed : to_matrix(w.lm_head);
  r.norm = to_vec(w.norm);
  for (const auto& l : w.layers) {
    RefLayer rl;
    rl.input_norm = to_vec(l.input_layernorm);
    rl.post_norm = to_vec(l.post_attention_layernorm);
    rl.q = to_matrix(l.q_proj);
    rl.k = to_matrix(l.k_proj);
    rl.v = to_matrix(l.v_proj);
    rl.o = to_matrix(l.o_proj);
    rl.gate = to_matrix(l.gate_proj);
    rl.up = to_matrix(l.up_proj);
    rl.down = to_matrix(l.down_proj);
    if (l.q_bias.defined()) {
      rl.q_bias = to_vec(l.q_bias);
      rl.k_bias = to_vec(l.k_bias);
      rl.v_bias = to_vec(l.v_bias);
    }
    if (l.q_norm.defined()) {
      rl.q_norm = to_vec(l.q_norm);
      rl.k_norm = to_vec(l.k_norm);
    }
    r.layers.push_back(std::move(rl));
  }
  return r;
}

Vec matvec(const Matrix& m, const Vec& x) {  // y = W x, W [out, in]
  EXPECT_EQ(static_cast<std::size_t>(m.cols), x.size());
  Vec y(static_cast<std::size_t>(m.rows), 0.0);
  for (int64_t r = 0; r < m.rows; ++r) {
    double s = 0;
    for (int64_t c = 0; c < m.cols; ++c) s += m.at(r, c) * x[static_cast<std::size_t>(c)];
    y[static_cast<std::size_t>(r)] = s;
  }
  return y;
}

Vec rms_norm(const Vec& x, const Vec& w, double eps) {
  double ms = 0;
  for (double v : x) ms += v * v;
  ms /= static_cast<double>(x.size());
  const double inv = 1.0 / std::sqrt(ms + eps);
  Vec y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * w[i];
  return y;
}

// inv_freq[j] = theta^(-2j/hd), then rope_scaling as transformers computes it
// (_compute_linear_scaling_rope_parameters: inv_freq / factor; _compute_llama3_parameters).
double ref_inv_freq(const LlamaConfig& c, std::size_t j, std::size_t hd) {
  double f = std::pow(c.rope_theta, -2.0 * static_cast<double>(j) / static_cast<double>(hd));
  const auto& s = c.rope_scaling;
  if (s.type == "linear") return f / s.factor;
  if (s.type == "llama3") {
    const double old_len = static_cast<double>(s.original_max_position_embeddings);
    const double low_freq_wavelen = old_len / s.low_freq_factor, high_freq_wavelen = old_len / s.high_freq_factor;
    const double wavelen = 2 * M_PI / f;
    const double llama = wavelen > low_freq_wavelen ? f / s.factor : f;
    const double smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    const double smoothed = (1 - smooth) * llama / s.factor + smooth * llama;
    const bool medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
    return medium ? smoothed : llama;
  }
  return f;
}

// HF RoPE on one head vector at position p: pairs (i, i + hd/2).
Vec rope(const Vec& x, int64_t p, const LlamaConfig& c) {
  const std::size_t hd = x.size(), half = hd / 2;
  Vec y(hd);
  for (std::size_t i = 0; i < hd; ++i) {
    const std::size_t j = i % half;
    const double inv_freq = ref_inv_freq(c, j, hd);
    const double angle = static_cast<double>(p) * inv_freq;
    const double rotated = i < half ? -x[i + half] : x[i - half];
    y[i] = x[i] * std::cos(angle) + rotated * std::sin(angle);
  }
  return y;
}

// Logits [T][vocab] of a single sequence at positions 0..T-1.
std::vector<Vec> reference_logits(const RefModel& m, const std::vector<int64_t>& ids) {
  const auto& c = m.config;
  const int64_t T = static_cast<int64_t>(ids.size());
  const int64_t H = c.num_attention_heads, KV = c.num_key_value_heads;
  const int64_t hd = c.explicit_head_dim > 0 ? c.explicit_head_dim : c.hidden_size / H, group = H / KV, d = c.hidden_size;
  const double eps = c.rms_norm_eps;
  std::vector<Vec> x(static_cast<std::size_t>(T));
  for (int64_t t = 0; t < T; ++t) {
    x[static_cast<std::size_t>(t)].resize(static_cast<std::size_t>(d));
    for (int64_t i = 0; i < d; ++i) x[static_cast<std::size_t>(t)][static_cast<std::size_t>(i)] = m.embed.at(ids[static_cast<std::size_t>(t)], i);
  }
  auto head_slice = [&](const Vec& v, int64_t h) {
    return Vec(v.begin() + h * hd, v.begin() + (h + 1) * hd);
  };
  for (const auto& layer : m.layers) {
    // q[t][h], k[t][kvh], v[t][kvh]: head vectors, RoPE applied to q and k.
    std::vector<std::vector<Vec>> q(static_cast<std::size_t>(T)), k(static_cast<std::size_t>(T)), v(static_cast<std::size_t>(T));
    for (int64_t t = 0; t < T; ++t) {
      const Vec h = rms_norm(x[static_cast<std::size_t>(t)], layer.input_norm, eps);
      Vec qf = matvec(layer.q, h), kf = matvec(layer.k, h), vf = matvec(layer.v, h);
      if (!layer.q_bias.empty())
        for (std::size_t i = 0; i < qf.size(); ++i) qf[i] += layer.q_bias[i];
      if (!layer.k_bias.empty())
        for (std::size_t i = 0; i < kf.size(); ++i) kf[i] += layer.k_bias[i], vf[i] += layer.v_bias[i];
      // Qwen3: each head's vector RMS-normalized with the shared [hd] weight, before RoPE.
      auto qk_norm = [&](const Vec& x, const Vec& w) { return w.empty() ? x : rms_norm(x, w, eps); };
      for (int64_t hh = 0; hh < H; ++hh) q[static_cast<std::size_t>(t)].push_back(rope(qk_norm(head_slice(qf, hh), layer.q_norm), t, c));
      for (int64_t hh = 0; hh < KV; ++hh) {
        k[static_cast<std::size_t>(t)].push_back(rope(qk_norm(head_slice(kf, hh), layer.k_norm), t, c));
        v[static_cast<std::size_t>(t)].push_back(head_slice(vf, hh));
      }
    }
    for (int64_t t = 0; t < T; ++t) {
      Vec attn(static_cast<std::size_t>(H * hd), 0.0);
      for (int64_t hh = 0; hh < H; ++hh) {
        const auto kvh = static_cast<std::size_t>(hh / group);
        const Vec& qv = q[static_cast<std::size_t>(t)][static_cast<std::size_t>(hh)];
        Vec scores(static_cast<std::size_t>(t + 1));
        double mx = -INFINITY;
        for (int64_t s = 0; s <= t; ++s) {
          double dot = 0;
          const Vec& kv = k[static_cast<std::size_t>(s)][kvh];
          for (int64_t i = 0; i < hd; ++i) dot += qv[static_cast<std::size_t>(i)] * kv[static_cast<std::size_t>(i)];
          scores[static_cast<std::size_t>(s)] = dot / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, scores[static_cast<std::size_t>(s)]);
        }
        double z = 0;
        for (auto& s : scores) z += (s = std::exp(s - mx));
        for (int64_t s = 0; s <= t; ++s) {
          const double p = scores[static_cast<std::size_t>(s)] / z;
          const Vec& vv = v[static_cast<std::size_t>(s)][kvh];
          for (int64_t i = 0; i < hd; ++i) attn[static_cast<std::size_t>(hh * hd + i)] += p * vv[static_cast<std::size_t>(i)];
        }
      }
      const Vec o = matvec(layer.o, attn);
      for (int64_t i = 0; i < d; ++i) x[static_cast<std::size_t>(t)][static_cast<std::size_t>(i)] += o[static_cast<std::size_t>(i)];
    }
    for (int64_t t = 0; t < T; ++t) {
      Vec& xt = x[static_cast<std::size_t>(t)];
      const Vec h = rms_norm(xt, layer.post_norm, eps);
      const Vec g = matvec(layer.gate, h), u = matvec(layer.up, h);
      Vec act(g.size());
      for (std::size_t i = 0; i < g.size(); ++i) act[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
      const Vec down = matvec(layer.down, act);
      for (int64_t i = 0; i < d; ++i) xt[static_cast<std::size_t>(i)] += down[static_cast<std::size_t>(i)];
    }
  }
  std::vector<Vec> logits;
  for (int64_t t = 0; t < T; ++t) logits.push_back(matvec(m.head, rms_norm(x[static_cast<std::size_t>(t)], m.norm, eps)));
  return logits;
}

// logits [1, T, vocab] within 1e-4 of the reference's, which must not be trivially small (or the
// tolerance would mean nothing). Fatal at the first mismatch.
void expect_reference_logits(const at::Tensor& logits, const std::vector<Vec>& expected) {
  auto acc = logits.accessor<float, 3>();
  double largest = 0;
  for (int64_t t = 0; t < logits.size(1); ++t)
    for (int64_t v = 0; v < logits.size(2); ++v) {
      const double e = expected[static_cast<std::size_t>(t)][static_cast<std::size_t>(v)];
      largest = std::max(largest, std::abs(e));
      ASSERT_NEAR(acc[0][t][v], e, 1e-4) << "position " << t << ", token " << v;
    }
  EXPECT_GT(largest, 0.5);
}

// ---------------------------------------------------------------------------------------------
// Fixtures and helpers.

class ModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::random_device rd;
    dir_ = fs::temp_directory_path() /
           ("eesched-model-" + std::string(info->name()) + "-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  fs::path dir_;
};


GenerateOptions greedy(int64_t n, bool kv_cache) {
  GenerateOptions o;
  o.generation.max_new_tokens = n;
  o.generation.temperature = 0.0;
  o.kv_cache = kv_cache;
  return o;
}

// ---------------------------------------------------------------------------------------------
// 1. The runtime's forward equals the naive float64 reference.

TEST_F(ModelTest, NaiveReferenceMatchesForward) {
  uint64_t seed = 11;
  for (const auto& var : variants()) {
    SCOPED_TRACE(var.name);
    const LlamaConfig config = tiny_config(var.gqa, var.tied);
    const LlamaModel model = make_model(config, seed++);
    const RefModel ref = reference_of(model);
    const auto ids = random_ids(9, config.vocab_size, seed++);
    const auto expected = reference_logits(ref, ids);
    const at::Tensor logits = model.forward(row_tensor(ids)).contiguous();
    ASSERT_EQ(logits.sizes(), (at::IntArrayRef{1, 9, config.vocab_size}));
    ASSERT_EQ(logits.scalar_type(), at::kFloat);
    auto acc = logits.accessor<float, 3>();
    double worst = 0, largest = 0;
    for (int64_t t = 0; t < 9; ++t) {
      for (int64_t v = 0; v < config.vocab_size; ++v) {
        const double e = expected[static_cast<std::size_t>(t)][static_cast<std::size_t>(v)];
        const double diff = std::abs(static_cast<double>(acc[0][t][v]) - e);
        worst = std::max(worst, diff);
        largest = std::max(largest, std::abs(e));
        EXPECT_NEAR(acc[0][t][v], e, kTol) << "position " << t << ", token " << v;
      }
    }
    // The logits must not be trivially small, or the tolerance would mean nothing.
    EXPECT_GT(largest, 0.5);
    RecordProperty(std::string("max_abs_diff_") + var.name, std::to_string(worst));
  }
}

// Sanity check of the reference itself: it must be sensitive to what the test claims to check
// (RoPE theta and the position of tokens), otherwise the comparison above proves little.
TEST_F(ModelTest, ReferenceIsSensitiveToRopeAndEps) {
  const LlamaConfig config = tiny_config(true, false);
  const LlamaModel model = make_model(config, 3);
  RefModel ref = reference_of(model);
  const auto ids = random_ids(9, config.vocab_size, 4);
  const auto base = reference_logits(ref, ids);
  auto max_diff = [](const std::vector<Vec>& a, const std::vector<Vec>& b) {
    double m = 0;
    for (std::size_t t = 0; t < a.size(); ++t)
      for (std::size_t v = 0; v < a[t].size(); ++v) m = std::max(m, std::abs(a[t][v] - b[t][v]));
    return m;
  };
  RefModel other = ref;
  other.config.rope_theta = 10000.0;
  EXPECT_GT(max_diff(base, reference_logits(other, ids)), 1e-3);
  other = ref;
  other.config.rms_norm_eps = 1e-6;
  EXPECT_GT(max_diff(base, reference_logits(other, ids)), 1e-5 * 10);
}

// ---------------------------------------------------------------------------------------------
// 2. Cached prefill + token-by-token decoding equals full recomputation.

TEST_F(ModelTest, KvCacheMatchesFullRecompute) {
  uint64_t seed = 21;
  for (const auto& var : variants()) {
    SCOPED_TRACE(var.name);
    const LlamaConfig config = tiny_config(var.gqa, var.tied);
    const LlamaModel model = make_model(config, seed++);
    const auto seq = random_ids(15, config.vocab_size, seed++);
    const int64_t n = 5, N = static_cast<int64_t>(seq.size());
    const at::Tensor full = model.forward(row_tensor(seq));  // [1, N, vocab]

    KVCache cache(config, 1, 32);
    const at::Tensor prefill = model.forward(row_tensor(slice(seq, 0, static_cast<std::size_t>(n))), {n}, cache, LogitsAt::All);
    EXPECT_EQ(cache.length(0), n);
    EXPECT_LT(max_abs_diff(prefill, full.narrow(1, 0, n)), kTol);
    for (int64_t t = n; t < N; ++t) {
      SCOPED_TRACE("position " + std::to_string(t));
      const at::Tensor step =
          model.forward(row_tensor({seq[static_cast<std::size_t>(t)]}), {1}, cache, LogitsAt::All);
      EXPECT_EQ(cache.length(0), t + 1);
      EXPECT_LT(max_abs_diff(step, full.narrow(1, t, 1)), kTol);
    }

    // Greedy generation: with and without the cache, identical tokens.
    const auto prompt = slice(seq, 0, static_cast<std::size_t>(n));
    const auto cached = generate(model, {prompt}, greedy(12, true));
    const auto plain = generate(model, {prompt}, greedy(12, false));
    ASSERT_EQ(cached.tokens.size(), 1u);
    EXPECT_EQ(cached.tokens[0].size(), 12u);
    EXPECT_EQ(cached.tokens[0], plain.tokens[0]);
    EXPECT_EQ(cached.finish_reason[0], "length");
    EXPECT_EQ(plain.finish_reason[0], "length");
    // And the generated tokens are the argmax of the full forward over prompt + tokens.
    const auto all = concat(prompt, cached.tokens[0]);
    const at::Tensor logits = model.forward(row_tensor(all)).contiguous();
    for (std::size_t i = 0; i < cached.tokens[0].size(); ++i) {
      const int64_t pos = n - 1 + static_cast<int64_t>(i);
      EXPECT_EQ(logits[0][pos].argmax().item<int64_t>(), cached.tokens[0][i]) << "new token " << i;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// 3. A batch gives each sequence what it would get alone.

TEST_F(ModelTest, BatchEqualsSequencesAlone) {
  uint64_t seed = 31;
  for (const auto& var : variants()) {
    SCOPED_TRACE(var.name);
    const LlamaConfig config = tiny_config(var.gqa, var.tied);
    const LlamaModel model = make_model(config, seed++);
    const std::vector<std::vector<int64_t>> prompts = {
        random_ids(3, config.vocab_size, seed + 1),
        random_ids(7, config.vocab_size, seed + 2),
        random_ids(5, config.vocab_size, seed + 3),
    };
    seed += 4;
    const int64_t B = 3;

    // generate(): batch vs alone, with and without the cache.
    for (bool kv : {true, false}) {
      SCOPED_TRACE(kv ? "kv_cache on" : "kv_cache off");
      const auto batch = generate(model, prompts, greedy(12, kv));
      ASSERT_EQ(batch.tokens.size(), prompts.size());
      for (std::size_t b = 0; b < prompts.size(); ++b) {
        const auto alone = generate(model, {prompts[b]}, greedy(12, kv));
        EXPECT_EQ(batch.tokens[b].size(), 12u);
        EXPECT_EQ(batch.tokens[b], alone.tokens[0]) << "prompt " << b;
      }
    }
    {
      const auto a = generate(model, prompts, greedy(12, true));
      const auto b = generate(model, prompts, greedy(12, false));
      EXPECT_EQ(a.tokens, b.tokens);
    }

    // Padded batched prefill, LogitsAt::Last, against each prompt's own prefill.
    KVCache batch_cache(config, B, 32);
    const std::vector<int64_t> lens = {3, 7, 5};
    const at::Tensor last = model.forward(padded(prompts, 36), lens, batch_cache, LogitsAt::Last);
    ASSERT_EQ(last.sizes(), (at::IntArrayRef{B, config.vocab_size}));
    std::vector<KVCache> alone_caches;
    for (int64_t b = 0; b < B; ++b) {
      alone_caches.emplace_back(config, 1, 32);
      const auto& p = prompts[static_cast<std::size_t>(b)];
      const at::Tensor own = model.forward(row_tensor(p), {static_cast<int64_t>(p.size())},
                                           alone_caches.back(), LogitsAt::Last);
      EXPECT_LT(max_abs_diff(last[b], own[0]), kTol) << "prompt " << b;
      EXPECT_EQ(batch_cache.length(b), lens[static_cast<std::size_t>(b)]);
    }

    // A batched cached forward with uneven n_new on top of uneven cache lengths (3, 7, 5):
    // rows add 1, 3 and 2 tokens; the rest of each row is padding.
    const std::vector<std::vector<int64_t>> more = {
        random_ids(1, config.vocab_size, seed + 10),
        random_ids(3, config.vocab_size, seed + 11),
        random_ids(2, config.vocab_size, seed + 12),
    };
    const std::vector<int64_t> n_new = {1, 3, 2};
    const at::Tensor step = model.forward(padded(more, 35), n_new, batch_cache, LogitsAt::All);
    ASSERT_EQ(step.sizes(), (at::IntArrayRef{B, 3, config.vocab_size}));
    for (int64_t b = 0; b < B; ++b) {
      SCOPED_TRACE("row " + std::to_string(b));
      const auto ub = static_cast<std::size_t>(b);
      const int64_t nb = n_new[ub];
      const at::Tensor own = model.forward(row_tensor(more[ub]), {nb}, alone_caches[ub], LogitsAt::All);
      EXPECT_LT(max_abs_diff(step[b].narrow(0, 0, nb), own[0]), kTol);
      EXPECT_EQ(batch_cache.length(b), lens[ub] + nb);
      // And against the full no-cache forward over the whole row.
      const auto whole = concat(prompts[ub], more[ub]);
      const at::Tensor full = model.forward(row_tensor(whole));
      EXPECT_LT(max_abs_diff(step[b].narrow(0, 0, nb), full[0].narrow(0, lens[ub], nb)), kTol);
    }

    // One more decoding step of one token per row, now at different cache lengths (4, 10, 7).
    const std::vector<int64_t> next = random_ids(3, config.vocab_size, seed + 20);
    const at::Tensor dec = model.forward(at::tensor(next, at::kLong).view({B, 1}), {1, 1, 1}, batch_cache, LogitsAt::Last);
    for (int64_t b = 0; b < B; ++b) {
      const auto ub = static_cast<std::size_t>(b);
      const auto whole = concat(concat(prompts[ub], more[ub]), {next[ub]});
      const at::Tensor full = model.forward(row_tensor(whole));
      EXPECT_LT(max_abs_diff(dec[b], full[0][static_cast<int64_t>(whole.size()) - 1]), kTol) << "row " << b;
    }

    // The no-cache forward over right-padded rows: padding never leaks into real positions.
    const at::Tensor padded_full = model.forward(padded(prompts, 36));
    for (int64_t b = 0; b < B; ++b) {
      const auto& p = prompts[static_cast<std::size_t>(b)];
      const auto n = static_cast<int64_t>(p.size());
      EXPECT_LT(max_abs_diff(padded_full[b].narrow(0, 0, n), model.forward(row_tensor(p))[0]), kTol) << "row " << b;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// 4. LogitsAt::Last is the last real row of LogitsAt::All.

TEST_F(ModelTest, LogitsAtLastMatchesAll) {
  uint64_t seed = 41;
  for (const auto& var : variants()) {
    SCOPED_TRACE(var.name);
    const LlamaConfig config = tiny_config(var.gqa, var.tied);
    const LlamaModel model = make_model(config, seed++);
    // Batch 1: prefill and one decoding step.
    {
      const auto p = random_ids(6, config.vocab_size, seed++);
      KVCache c_all(config, 1, 16), c_last(config, 1, 16);
      const at::Tensor all = model.forward(row_tensor(p), {6}, c_all, LogitsAt::All);
      const at::Tensor last = model.forward(row_tensor(p), {6}, c_last, LogitsAt::Last);
      ASSERT_EQ(last.sizes(), (at::IntArrayRef{1, config.vocab_size}));
      EXPECT_LT(max_abs_diff(last[0], all[0][5]), kTol);
      const at::Tensor all2 = model.forward(row_tensor({7}), {1}, c_all, LogitsAt::All);
      const at::Tensor last2 = model.forward(row_tensor({7}), {1}, c_last, LogitsAt::Last);
      EXPECT_LT(max_abs_diff(last2[0], all2[0][0]), kTol);
    }
    // Batch 3, padded, uneven lengths: Last picks each row's last real token, not column T-1.
    {
      const std::vector<std::vector<int64_t>> rows = {
          random_ids(4, config.vocab_size, seed + 1), random_ids(2, config.vocab_size, seed + 2),
          random_ids(6, config.vocab_size, seed + 3)};
      seed += 4;
      const std::vector<int64_t> lens = {4, 2, 6};
      KVCache c_all(config, 3, 16), c_last(config, 3, 16);
      const at::Tensor all = model.forward(padded(rows, 1), lens, c_all, LogitsAt::All);
      const at::Tensor last = model.forward(padded(rows, 1), lens, c_last, LogitsAt::Last);
      ASSERT_EQ(last.sizes(), (at::IntArrayRef{3, config.vocab_size}));
      for (int64_t b = 0; b < 3; ++b)
        EXPECT_LT(max_abs_diff(last[b], all[b][lens[static_cast<std::size_t>(b)] - 1]), kTol) << "row " << b;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// 5. Rolling the cache back and re-feeding different tokens equals a fresh run.

TEST_F(ModelTest, CacheRollback) {
  uint64_t seed = 51;
  for (const auto& var : variants()) {
    SCOPED_TRACE(var.name);
    const LlamaConfig config = tiny_config(var.gqa, var.tied);
    const LlamaModel model = make_model(config, seed++);
    const auto prompt = random_ids(6, config.vocab_size, seed++);
    const auto draft = random_ids(4, config.vocab_size, seed++);   // k = 4 speculated tokens
    auto fix = random_ids(3, config.vocab_size, seed++);           // the corrected continuation
    if (fix[0] == draft[1]) fix[0] = (fix[0] + 1) % config.vocab_size;

    KVCache cache(config, 1, 20);
    model.forward(row_tensor(prompt), {6}, cache, LogitsAt::Last);
    model.forward(row_tensor(draft), {4}, cache, LogitsAt::All);
    EXPECT_EQ(cache.length(0), 10);
    // Accept one draft token, reject the other three, feed three different tokens at once.
    cache.set_length(0, 7);
    EXPECT_EQ(cache.length(0), 7);
    const at::Tensor got = model.forward(row_tensor(fix), {3}, cache, LogitsAt::All);
    EXPECT_EQ(cache.length(0), 10);
    const auto fresh_seq = concat(concat(prompt, {draft[0]}), fix);
    const at::Tensor fresh = model.forward(row_tensor(fresh_seq));
    EXPECT_LT(max_abs_diff(got[0], fresh[0].narrow(0, 7, 3)), kTol);
    // Then keep decoding one token at a time over the overwritten positions.
    const at::Tensor one = model.forward(row_tensor({5}), {1}, cache, LogitsAt::Last);
    const at::Tensor fresh2 = model.forward(row_tensor(concat(fresh_seq, {5})));
    EXPECT_LT(max_abs_diff(one[0], fresh2[0][10]), kTol);

    // Roll back all the way into the prompt, and one token at a time.
    cache.set_length(0, 3);
    std::vector<int64_t> seq = slice(prompt, 0, 3);
    for (int64_t tok : {9, 0, 36, 2}) {
      seq.push_back(tok);
      const at::Tensor step = model.forward(row_tensor({tok}), {1}, cache, LogitsAt::All);
      const at::Tensor full = model.forward(row_tensor(seq));
      EXPECT_LT(max_abs_diff(step[0][0], full[0][static_cast<int64_t>(seq.size()) - 1]), kTol);
    }

    // Batched rollback, different amounts per row.
    const std::vector<std::vector<int64_t>> rows = {random_ids(8, config.vocab_size, seed + 1),
                                                    random_ids(5, config.vocab_size, seed + 2)};
    seed += 3;
    KVCache bc(config, 2, 20);
    model.forward(padded(rows, 0), {8, 5}, bc, LogitsAt::Last);
    bc.set_length(0, 4);  // row 0 drops 4
    bc.set_length(1, 4);  // row 1 drops 1
    const std::vector<std::vector<int64_t>> refeed = {{1, 2, 3}, {30, 31}};
    const at::Tensor out = model.forward(padded(refeed, 0), {3, 2}, bc, LogitsAt::All);
    for (std::size_t b = 0; b < 2; ++b) {
      const auto s = concat(slice(rows[b], 0, 4), refeed[b]);
      const at::Tensor full = model.forward(row_tensor(s));
      const auto nb = static_cast<int64_t>(refeed[b].size());
      EXPECT_LT(max_abs_diff(out[static_cast<int64_t>(b)].narrow(0, 0, nb), full[0].narrow(0, 4, nb)), kTol) << "row " << b;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// 6. Errors: a runtime::Error with a useful message, never a crash.

TEST_F(ModelTest, ErrorsOnBadWeights) {
  const LlamaConfig config = tiny_config(true, false);
  const LlamaModel model = make_model(config, 61);
  {
    LlamaWeights w = cloned_weights(model);
    w.layers[1].up_proj = at::zeros({config.intermediate_size, config.hidden_size + 1}, at::kFloat);
    const auto msg = error_of([&] { (void)LlamaModel(config, w); });
    EXPECT_THAT(msg, HasSubstr("model.layers.1.mlp.up_proj.weight"));
  }
  {
    LlamaWeights w = cloned_weights(model);
    w.layers[0].k_proj = at::zeros({config.num_attention_heads * config.head_dim(), config.hidden_size}, at::kFloat);
    EXPECT_THAT(error_of([&] { (void)LlamaModel(config, w); }), HasSubstr("model.layers.0.self_attn.k_proj.weight"));
  }
  {
    LlamaWeights w = cloned_weights(model);
    w.layers.pop_back();
    EXPECT_THAT(error_of([&] { (void)LlamaModel(config, w); }), HasSubstr("layers"));
    w = cloned_weights(model);
    w.layers.push_back(w.layers.back());
    EXPECT_THAT(error_of([&] { (void)LlamaModel(config, w); }), HasSubstr("layers"));
  }
  {
    LlamaWeights w = cloned_weights(model);
    w.lm_head = at::Tensor();  // untied config needs a head
    EXPECT_THAT(error_of([&] { (void)LlamaModel(config, w); }), HasSubstr("lm_head.weight"));
  }
  {
    LlamaWeights w = cloned_weights(model);
    w.norm = at::ones({config.hidden_size + 2}, at::kFloat);
    EXPECT_THAT(error_of([&] { (void)LlamaModel(config, w); }), HasSubstr("model.norm.weight"));
  }
  {
    // Tied config with a head that differs from the embeddings.
    const LlamaConfig tied = tiny_config(true, true);
    LlamaWeights w = cloned_weights(model);
    ASSERT_TRUE(w.lm_head.defined());
    EXPECT_THAT(error_of([&] { (void)LlamaModel(tied, w); }), HasSubstr("lm_head"));
    w.lm_head = w.embed_tokens.clone();  // an equal copy is fine (HF may store one)
    EXPECT_NO_THROW((void)LlamaModel(tied, w));
  }
}

TEST_F(ModelTest, ErrorsOnCacheAndGenerate) {
  const LlamaConfig config = tiny_config(true, true);
  const LlamaModel model = make_model(config, 62);
  // KV cache capacity overflow in forward.
  {
    KVCache cache(config, 1, 8);
    model.forward(row_tensor(random_ids(6, config.vocab_size, 1)), {6}, cache, LogitsAt::Last);
    const auto msg = error_of([&] { model.forward(row_tensor({1, 2, 3}), {3}, cache, LogitsAt::Last); });
    EXPECT_THAT(msg, HasSubstr("capacity"));
    EXPECT_EQ(cache.length(0), 6);  // a rejected call leaves the cache as it was
    // Still usable afterwards.
    EXPECT_NO_THROW(model.forward(row_tensor({1, 2}), {2}, cache, LogitsAt::Last));
    EXPECT_THAT(error_of([&] { model.forward(row_tensor({1}), {1}, cache, LogitsAt::Last); }), HasSubstr("capacity"));
  }
  // Cache capacity beyond the context, rollback beyond capacity, mismatched batch.
  EXPECT_THAT(error_of([&] { (void)KVCache(config, 1, config.max_position_embeddings + 1); }), HasSubstr("max_position_embeddings"));
  {
    KVCache cache(config, 2, 8);
    error_of([&] { cache.set_length(0, 9); });
    error_of([&] { cache.set_length(2, 1); });
    error_of([&] { model.forward(row_tensor({1, 2}), {2}, cache, LogitsAt::Last); });          // batch 1 vs 2
    error_of([&] { model.forward(padded({{1, 2}, {3}}, 0), {2, 0}, cache, LogitsAt::Last); });  // n_new 0
    error_of([&] { model.forward(padded({{1, 2}, {3}}, 0), {2, 3}, cache, LogitsAt::Last); });  // n_new > T
  }
  // No-cache forward beyond the context.
  EXPECT_THAT(error_of([&] { model.forward(at::zeros({1, config.max_position_embeddings + 1}, at::kLong)); }),
              HasSubstr("max_position_embeddings"));
  // generate(): token ids outside the vocabulary.
  EXPECT_THAT(error_of([&] { generate(model, {{1, 2, config.vocab_size}}, greedy(4, true)); }),
              HasSubstr(std::to_string(config.vocab_size)));
  error_of([&] { generate(model, {{1, 2}, {-1}}, greedy(4, false)); });
  // generate(): prompt + max_new_tokens over the context.
  EXPECT_THAT(error_of([&] { generate(model, {random_ids(10, config.vocab_size, 2)}, greedy(55, true)); }),
              HasSubstr("context"));
  error_of([&] { generate(model, {random_ids(10, config.vocab_size, 2)}, greedy(55, false)); });
  EXPECT_NO_THROW(generate(model, {random_ids(10, config.vocab_size, 2)}, greedy(54, true)));
  // generate(): empty input.
  error_of([&] { generate(model, {}, greedy(4, true)); });
  error_of([&] { generate(model, {{}}, greedy(4, true)); });
  error_of([&] { generate(model, {{1}}, greedy(0, true)); });
}

TEST_F(ModelTest, ErrorsOnBadConfig) {
  {
    LlamaConfig c = tiny_config(true, true);
    c.hidden_size = 18;  // not divisible by 4 heads
    EXPECT_THAT(error_of([&] { c.validate(); }), HasSubstr("num_attention_heads"));
    // The model constructor validates as well.
    error_of([&] { (void)LlamaModel(c, LlamaWeights{}); });
  }
  {
    LlamaConfig c = tiny_config(true, true);
    c.num_key_value_heads = 3;  // 4 heads are not a multiple of 3
    EXPECT_THAT(error_of([&] { c.validate(); }), HasSubstr("num_key_value_heads"));
    error_of([&] { eesched::runtime::random_model(c, 1); });
  }
  {
    LlamaConfig c = tiny_config(true, true);
    c.hidden_size = 12;  // head_dim 3: odd, no RoPE pairs
    EXPECT_THAT(error_of([&] { c.validate(); }), HasSubstr("head_dim"));
  }
  {
    LlamaConfig c = tiny_config(true, true);
    c.num_key_value_heads = 0;
    EXPECT_THAT(error_of([&] { c.validate(); }), HasSubstr("num_key_value_heads"));
  }
}

// ---------------------------------------------------------------------------------------------
// 7. save/load round trips and load errors.

TEST_F(ModelTest, SaveLoadRoundTrip) {
  uint64_t seed = 71;
  for (const auto& var : variants()) {
    SCOPED_TRACE(var.name);
    const LlamaConfig config = tiny_config(var.gqa, var.tied);
    const LlamaModel model = make_model(config, seed++);
    const auto ids = row_tensor(random_ids(9, config.vocab_size, seed++));
    const at::Tensor logits = model.forward(ids);

    const fs::path f32 = dir_ / (std::string(var.name) + "-f32");
    model.save(f32);
    ASSERT_TRUE(fs::exists(f32 / "config.json"));
    ASSERT_TRUE(fs::exists(f32 / "model.safetensors"));
    const LlamaModel loaded = LlamaModel::load(f32);
    EXPECT_EQ(loaded.config().rope_theta, config.rope_theta);
    EXPECT_EQ(loaded.config().rms_norm_eps, config.rms_norm_eps);
    EXPECT_EQ(loaded.config().num_key_value_heads, config.num_key_value_heads);
    EXPECT_EQ(loaded.config().tie_word_embeddings, config.tie_word_embeddings);
    EXPECT_TRUE(at::equal(loaded.forward(ids), logits)) << "f32 round trip is not bitwise equal";
    {
      // The tied head is not stored; the untied one is.
      const auto st = eesched::runtime::SafetensorsFile::open(f32 / "model.safetensors");
      EXPECT_EQ(st.contains("lm_head.weight"), !config.tie_word_embeddings);
    }

    // Half-precision files: kept in their dtype and widened exactly in the kernels, so the logits
    // equal those of the f32 model whose weights were rounded the same way; and are close to the
    // original ones.
    for (const auto& [dtype, tol, tag] : {std::tuple{at::kBFloat16, 5e-2, "bf16"}, std::tuple{at::kHalf, 5e-3, "f16"}}) {
      SCOPED_TRACE(tag);
      const fs::path dir = dir_ / (std::string(var.name) + "-" + tag);
      fs::create_directories(dir);
      auto named = model.weights().named();
      LlamaWeights rounded = cloned_weights(model);
      for (auto& [name, t] : named) t = t.to(dtype);
      eesched::runtime::write_safetensors(dir / "model.safetensors", named, {{"format", "pt"}});
      config.save(dir / "config.json");
      const LlamaModel half = LlamaModel::load(dir);
      const at::Tensor half_logits = half.forward(ids);
      const double diff = max_abs_diff(half_logits, logits);
      EXPECT_LT(diff, tol);
      EXPECT_GT(diff, 0.0) << "rounding to " << tag << " should change something";
      auto round = [&](at::Tensor& t) {
        if (t.defined()) t = t.to(dtype).to(at::kFloat);
      };
      round(rounded.embed_tokens);
      round(rounded.norm);
      round(rounded.lm_head);
      for (auto& l : rounded.layers)
        for (at::Tensor* t : {&l.input_layernorm, &l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj,
                              &l.post_attention_layernorm, &l.gate_proj, &l.up_proj, &l.down_proj})
          round(*t);
      EXPECT_TRUE(at::equal(half_logits, LlamaModel(config, rounded).forward(ids)));
    }
  }
}

TEST_F(ModelTest, LoadErrors) {
  const LlamaConfig config = tiny_config(true, false);
  const LlamaModel model = make_model(config, 81);
  const auto named = model.weights().named();
  auto fresh_dir = [&](const std::string& name) {
    const fs::path d = dir_ / name;
    model.save(d);
    return d;
  };
  auto write_tensors = [&](const fs::path& d, const std::vector<std::pair<std::string, at::Tensor>>& t) {
    eesched::runtime::write_safetensors(d / "model.safetensors", t, {{"format", "pt"}});
  };

  // Truncated by a few bytes: the last tensor runs past the end and is named.
  {
    const fs::path d = fresh_dir("trunc-tail");
    const auto size = fs::file_size(d / "model.safetensors");
    fs::resize_file(d / "model.safetensors", size - 10);
    const auto msg = error_of([&] { LlamaModel::load(d); });
    EXPECT_THAT(msg, HasSubstr("'" + named.back().first + "'"));
    EXPECT_THAT(msg, HasSubstr("truncated"));
  }
  // Truncated to half: some tensor is named.
  {
    const fs::path d = fresh_dir("trunc-half");
    const auto size = fs::file_size(d / "model.safetensors");
    fs::resize_file(d / "model.safetensors", size / 2);
    const auto msg = error_of([&] { LlamaModel::load(d); });
    bool names_one = false;
    for (const auto& [name, t] : named) names_one = names_one || msg.find("'" + name + "'") != std::string::npos;
    EXPECT_TRUE(names_one) << msg;
  }
  // Truncated into the header.
  {
    const fs::path d = fresh_dir("trunc-header");
    fs::resize_file(d / "model.safetensors", 20);
    error_of([&] { LlamaModel::load(d); });
    fs::resize_file(d / "model.safetensors", 0);
    error_of([&] { LlamaModel::load(d); });
  }
  // config.json without a required key.
  {
    const fs::path d = fresh_dir("no-key");
    std::ifstream in(d / "config.json");
    std::stringstream ss;
    ss << in.rdbuf();
    in.close();
    std::string text = ss.str();
    const auto pos = text.find("\"intermediate_size\"");
    ASSERT_NE(pos, std::string::npos);
    const auto eol = text.find('\n', pos);
    text.erase(pos, eol - pos + 1);
    std::ofstream(d / "config.json") << text;
    EXPECT_THAT(error_of([&] { LlamaModel::load(d); }), HasSubstr("intermediate_size"));
  }
  // No config.json, no directory.
  {
    const fs::path d = fresh_dir("no-config");
    fs::remove(d / "config.json");
    error_of([&] { LlamaModel::load(d); });
    error_of([&] { LlamaModel::load(dir_ / "does-not-exist"); });
  }
  // A tensor missing from the file.
  {
    const fs::path d = fresh_dir("missing");
    auto t = named;
    const std::string gone = "model.layers.1.self_attn.k_proj.weight";
    t.erase(std::remove_if(t.begin(), t.end(), [&](const auto& p) { return p.first == gone; }), t.end());
    ASSERT_EQ(t.size() + 1, named.size());
    write_tensors(d, t);
    EXPECT_THAT(error_of([&] { LlamaModel::load(d); }), HasSubstr(gone));
  }
  // An unexpected extra tensor: a third layer's weight, and an unrelated name.
  for (const std::string extra : {"model.layers.2.mlp.up_proj.weight", "model.something_else"}) {
    const fs::path d = fresh_dir("extra");
    auto t = named;
    t.emplace_back(extra, at::zeros({3, 4}, at::kFloat));
    write_tensors(d, t);
    EXPECT_THAT(error_of([&] { LlamaModel::load(d); }), HasSubstr(extra));
  }
  // A stored tensor of the wrong shape: named by the loader.
  {
    const fs::path d = fresh_dir("shape");
    auto t = named;
    for (auto& [name, tensor] : t)
      if (name == "model.layers.0.mlp.down_proj.weight") tensor = at::zeros({config.hidden_size, 5}, at::kFloat);
    write_tensors(d, t);
    EXPECT_THAT(error_of([&] { LlamaModel::load(d); }), HasSubstr("model.layers.0.mlp.down_proj.weight"));
  }
  // A stored tensor of an unsupported dtype.
  {
    const fs::path d = fresh_dir("dtype");
    auto t = named;
    for (auto& [name, tensor] : t)
      if (name == "model.norm.weight") tensor = tensor.to(at::kDouble);
    write_tensors(d, t);
    EXPECT_THAT(error_of([&] { LlamaModel::load(d); }), HasSubstr("model.norm.weight"));
  }
}


// ---------------------------------------------------------------------------------------------
// 8. Model families: each architecture feature against the naive reference, the cache, a
//    save/load round trip, config.json parsing and refusals, and sharded checkpoints.

struct Family {
  const char* name;
  LlamaConfig config;
};

std::vector<Family> families() {
  std::vector<Family> out;
  auto base = [](bool gqa, bool tied) { return tiny_config(gqa, tied); };
  {
    LlamaConfig c = base(true, false);
    c.model_type = "qwen2";  // q/k/v biases
    c.qkv_bias = true;
    out.push_back({"qwen2_bias_untied", c});
  }
  {
    LlamaConfig c = base(true, true);
    c.model_type = "qwen3";  // q/k norms, head_dim 8 != 16 / 4
    c.qk_norm = true;
    c.explicit_head_dim = 8;
    out.push_back({"qwen3_qknorm_head_dim_tied", c});
  }
  {
    LlamaConfig c = base(true, true);
    c.explicit_head_dim = 8;  // 4 frequencies: 6.3, 30, 140, 660 positions per turn
    c.rope_scaling.type = "llama3";
    c.rope_scaling.factor = 8;
    c.rope_scaling.low_freq_factor = 1;
    c.rope_scaling.high_freq_factor = 4;
    c.rope_scaling.original_max_position_embeddings = 64;  // bands: < 16 kept, 16..64 blended, > 64 / 8
    out.push_back({"llama3_rope_head_dim_tied", c});
  }
  {
    LlamaConfig c = base(false, false);
    c.rope_scaling.type = "linear";
    c.rope_scaling.factor = 4;
    out.push_back({"linear_rope_untied", c});
  }
  {
    LlamaConfig c = base(true, false);
    c.model_type = "mistral";
    out.push_back({"mistral_untied", c});
  }
  for (auto& f : out) f.config.validate();
  return out;
}

TEST_F(ModelTest, FamiliesMatchNaiveReference) {
  uint64_t seed = 101;
  for (const auto& fam : families()) {
    SCOPED_TRACE(fam.name);
    const LlamaConfig& config = fam.config;
    const LlamaModel model = make_model(config, seed++);
    const auto w = model.weights();
    EXPECT_EQ(w.layers[0].q_bias.defined(), config.qkv_bias);
    EXPECT_EQ(w.layers[0].q_norm.defined(), config.qk_norm);
    const auto ids = random_ids(12, config.vocab_size, seed++);
    const auto expected = reference_logits(reference_of(model), ids);
    const at::Tensor logits = model.forward(row_tensor(ids)).contiguous();
    ASSERT_NO_FATAL_FAILURE(expect_reference_logits(logits, expected));
    // The feature matters: the reference without it differs (so the match above means something).
    RefModel without = reference_of(model);
    if (config.qkv_bias) for (auto& l : without.layers) l.q_bias.assign(l.q_bias.size(), 0.0), l.k_bias.assign(l.k_bias.size(), 0.0);
    if (config.qk_norm) for (auto& l : without.layers) l.q_norm.clear(), l.k_norm.clear();
    without.config.rope_scaling = {};
    if (config.qkv_bias || config.qk_norm || !config.rope_scaling.type.empty()) {
      const auto other = reference_logits(without, ids);
      double diff = 0;
      for (std::size_t t = 0; t < other.size(); ++t)
        for (std::size_t v = 0; v < other[t].size(); ++v) diff = std::max(diff, std::abs(other[t][v] - expected[t][v]));
      EXPECT_GT(diff, 1e-2);
    }

    // The cached path (prefill + batch-1 decoding through the fused decode step) agrees, and
    // each decoding step matches the reference itself.
    KVCache cache(config, 1, 32);
    const at::Tensor prefill = model.forward(row_tensor(slice(ids, 0, 5)), {5}, cache, LogitsAt::All);
    EXPECT_LT(max_abs_diff(prefill, logits.narrow(1, 0, 5)), kTol);
    std::vector<at::Tensor> steps;
    for (std::size_t t = 5; t < ids.size(); ++t) {
      steps.push_back(model.forward(row_tensor({ids[t]}), {1}, cache, LogitsAt::All));
      EXPECT_LT(max_abs_diff(steps.back(), logits.narrow(1, static_cast<int64_t>(t), 1)), kTol);
    }
    ASSERT_NO_FATAL_FAILURE(expect_reference_logits(at::cat(steps, 1).contiguous(), {expected.begin() + 5, expected.end()}));

    // Save and load: the config keys and the extra tensors survive, bitwise.
    const fs::path d = dir_ / fam.name;
    model.save(d);
    const LlamaModel loaded = LlamaModel::load(d);
    EXPECT_EQ(loaded.config().model_type, config.model_type);
    EXPECT_EQ(loaded.config().head_dim(), config.head_dim());
    EXPECT_EQ(loaded.config().rope_scaling, config.rope_scaling);
    EXPECT_EQ(loaded.config().parameter_count(), config.parameter_count());
    EXPECT_TRUE(at::equal(loaded.forward(row_tensor(ids)), model.forward(row_tensor(ids))));
    int64_t params = 0;
    for (const auto& [name, t] : model.weights().named()) params += t.numel();
    EXPECT_EQ(params, config.parameter_count() + (config.tie_word_embeddings ? 0 : 0));
  }
}

std::string config_text(const std::string& extra) {
  return R"({"vocab_size": 37, "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64)" +
         extra + "}";
}

// 16-bit models keep their weights in 16 bits (the kernels widen them in registers): each family
// in bf16 and f16 against the naive float64 reference run on the same weights widened, the
// cached path, weight_bytes, views without copies, int8 from the 16-bit values, save/load.
TEST_F(ModelTest, HalfPrecisionModelsMatchNaiveReference) {
  uint64_t seed = 301;
  for (const auto& fam : families()) {
    for (const auto& [dtype, tag] : {std::pair{at::kBFloat16, "bf16"}, std::pair{at::kHalf, "f16"}}) {
      SCOPED_TRACE(std::string(fam.name) + " " + tag);
      const LlamaConfig& config = fam.config;
      const LlamaWeights w16 = eesched::testing::weights_in(make_model(config, seed++).weights(), dtype);  // as a checkpoint holds them
      const LlamaModel model(config, w16);
      const LlamaModel wide(config, eesched::testing::weights_in(w16, at::kFloat));  // widened exactly
      ASSERT_EQ(model.dtype(), dtype);
      ASSERT_EQ(wide.dtype(), at::kFloat);
      const auto w = model.weights();
      EXPECT_EQ(w.embed_tokens.scalar_type(), dtype);
      EXPECT_EQ(w.layers[0].q_proj.scalar_type(), dtype);
      EXPECT_EQ(w.layers[1].down_proj.scalar_type(), dtype);
      EXPECT_EQ(w.lm_head.defined(), !config.tie_word_embeddings);
      if (w.lm_head.defined()) {
        EXPECT_EQ(w.lm_head.scalar_type(), dtype);
      }
      EXPECT_EQ(w.norm.scalar_type(), at::kFloat);  // tiny: kept in f32
      // Views into one fused buffer, no copy: q|k|v adjacent, gate|up adjacent.
      EXPECT_TRUE(w.layers[0].k_proj.storage().is_alias_of(w.layers[0].q_proj.storage()));
      EXPECT_EQ(w.layers[0].k_proj.storage_offset(), w.layers[0].q_proj.storage_offset() + w.layers[0].q_proj.numel());
      EXPECT_TRUE(w.layers[0].up_proj.storage().is_alias_of(w.layers[0].gate_proj.storage()));
      // Two bytes per linear weight (the head once: tied, it is the embedding).
      int64_t linear = config.vocab_size * config.hidden_size;
      for (const auto& l : w.layers)
        for (const at::Tensor* t : {&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.gate_proj, &l.up_proj, &l.down_proj})
          linear += t->numel();
      EXPECT_EQ(model.weight_bytes(), wide.weight_bytes() - 2 * linear);

      const auto ids = random_ids(12, config.vocab_size, seed++);
      const auto expected = reference_logits(reference_of(wide), ids);
      const at::Tensor logits = model.forward(row_tensor(ids)).contiguous();
      ASSERT_NO_FATAL_FAILURE(expect_reference_logits(logits, expected));
      // The same products as the widened f32 model, bit for bit (exact widening, same kernel).
      EXPECT_TRUE(at::equal(logits, wide.forward(row_tensor(ids))));
      // Prefill longer than kFewRows: W widened tile by tile for BLAS.
      const auto long_ids = row_tensor(random_ids(40, config.vocab_size, seed++));
      EXPECT_LT(max_abs_diff(model.forward(long_ids), wide.forward(long_ids)), kTol);

      // KV-cache decoding (batch-1 gemv on 16-bit weights) equals the full forward.
      KVCache cache(config, 1, 32);
      const at::Tensor prefill = model.forward(row_tensor(slice(ids, 0, 5)), {5}, cache, LogitsAt::All);
      EXPECT_LT(max_abs_diff(prefill, logits.narrow(1, 0, 5)), kTol);
      for (std::size_t t = 5; t < ids.size(); ++t)
        EXPECT_LT(max_abs_diff(model.forward(row_tensor({ids[t]}), {1}, cache, LogitsAt::All),
                               logits.narrow(1, static_cast<int64_t>(t), 1)),
                  kTol);

      // int8 from the 16-bit values: the same as from the widened ones; the rest stays 16-bit.
      auto policy = [](const std::string& name) {
        return name.find("q_proj") != std::string::npos ? eesched::runtime::WeightFormat::AsStored
                                                        : eesched::runtime::WeightFormat::Int8;
      };
      const LlamaModel q16(config, model.weights(), policy), q32(config, wide.weights(), policy);
      const auto a = q16.int8_weights(), b = q32.int8_weights();
      ASSERT_EQ(a.size(), b.size());
      for (std::size_t i = 0; i < a.size(); ++i) {
        EXPECT_TRUE(at::equal(a[i].second.values, b[i].second.values)) << a[i].first;
        EXPECT_TRUE(at::equal(a[i].second.scales, b[i].second.scales)) << a[i].first;
      }
      EXPECT_EQ(q16.weights().layers[0].q_proj.scalar_type(), dtype);
      EXPECT_TRUE(at::equal(q16.forward(row_tensor(ids)), q32.forward(row_tensor(ids))));
      EXPECT_THROW(model.parameters(), Error);  // training needs f32

      // Saved in its dtype (config torch_dtype too), loaded back the same, bitwise.
      const fs::path d = dir_ / (std::string(fam.name) + "-" + tag);
      model.save(d);
      const auto st = eesched::runtime::SafetensorsFile::open(d / "model.safetensors");
      for (const auto& info : st.tensors())
        EXPECT_EQ(info.dtype, dtype == at::kBFloat16 ? eesched::runtime::DType::BF16 : eesched::runtime::DType::F16) << info.name;
      const LlamaModel loaded = LlamaModel::load(d);
      EXPECT_EQ(loaded.config().torch_dtype, dtype == at::kBFloat16 ? "bfloat16" : "float16");
      EXPECT_EQ(loaded.dtype(), dtype);
      EXPECT_EQ(loaded.weight_bytes(), model.weight_bytes());
      EXPECT_TRUE(at::equal(loaded.forward(row_tensor(ids)), logits));
    }
  }
}

TEST(ConfigFamilies, ParsesEachFamilyAndRefusesWhatChangesTheMath) {
  using eesched::runtime::LlamaConfig;
  // Real-world key sets (abridged): Llama 3.2, Qwen2.5, Qwen3, Mistral, SmolLM2.
  const auto llama32 = LlamaConfig::from_json(config_text(R"(, "architectures": ["LlamaForCausalLM"], "model_type": "llama",
      "attention_bias": false, "mlp_bias": false, "head_dim": 4, "pretraining_tp": 1, "attention_dropout": 0.0,
      "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                       "original_max_position_embeddings": 8192, "rope_type": "llama3"},
      "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16", "use_cache": true)"));
  EXPECT_EQ(llama32.rope_scaling.type, "llama3");
  EXPECT_EQ(llama32.rope_scaling.factor, 32.0);
  EXPECT_EQ(llama32.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(llama32.head_dim(), 4);
  EXPECT_FALSE(llama32.qkv_bias);
  const auto qwen25 = LlamaConfig::from_json(config_text(R"(, "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
      "sliding_window": 32, "use_sliding_window": false, "max_window_layers": 21, "rope_theta": 1000000.0)"));
  EXPECT_TRUE(qwen25.qkv_bias);
  EXPECT_FALSE(qwen25.qk_norm);
  const auto qwen3 = LlamaConfig::from_json(config_text(R"(, "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
      "head_dim": 8, "attention_bias": false, "sliding_window": null, "use_sliding_window": false)"));
  EXPECT_TRUE(qwen3.qk_norm);
  EXPECT_EQ(qwen3.head_dim(), 8);
  EXPECT_EQ(LlamaConfig::from_json(config_text(R"(, "architectures": ["MistralForCausalLM"], "sliding_window": null)")).model_type, "mistral");
  EXPECT_EQ(LlamaConfig::from_json(config_text(R"(, "rope_scaling": {"type": "linear", "factor": 2.0})")).rope_scaling.type, "linear");
  EXPECT_EQ(LlamaConfig::from_json(config_text("")).model_type, "llama");  // our demo models' older files
  // to_json round-trips every family key.
  for (const auto& c : {llama32, qwen25, qwen3}) {
    const auto back = LlamaConfig::from_json(c.to_json());
    EXPECT_EQ(back.model_type, c.model_type);
    EXPECT_EQ(back.rope_scaling, c.rope_scaling);
    EXPECT_EQ(back.head_dim(), c.head_dim());
    EXPECT_EQ(back.qkv_bias, c.qkv_bias);
    EXPECT_EQ(back.qk_norm, c.qk_norm);
  }
  // One-line refusals naming the key.
  const std::vector<std::pair<std::string, std::string>> refused = {
      {R"(, "model_type": "gemma")", "gemma"},
      {R"(, "architectures": ["PhiForCausalLM"])", "PhiForCausalLM"},
      {R"(, "rope_scaling": {"rope_type": "yarn", "factor": 4.0})", "yarn"},
      {R"(, "rope_scaling": {"type": "dynamic", "factor": 4.0})", "dynamic"},
      {R"(, "rope_scaling": {"rope_type": "llama3", "factor": 8.0})", "low_freq_factor"},
      {R"(, "mlp_bias": true)", "mlp_bias"},
      {R"(, "attention_bias": true)", "attention_bias"},
      {R"(, "model_type": "qwen3", "attention_bias": true)", "attention_bias"},
      {R"(, "model_type": "mistral", "sliding_window": 16)", "sliding_window"},
      {R"(, "model_type": "qwen2", "use_sliding_window": true, "sliding_window": 16)", "sliding_window"},
      {R"(, "hidden_act": "gelu")", "hidden_act"},
      {R"(, "model_type": "llama", "architectures": ["Qwen2ForCausalLM"])", "Qwen2ForCausalLM"},
  };
  for (const auto& [extra, word] : refused) {
    const auto msg = error_of([&] { LlamaConfig::from_json(config_text(extra)); });
    EXPECT_THAT(msg, HasSubstr(word)) << extra;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  // A window no smaller than the context changes nothing: accepted.
  EXPECT_NO_THROW(LlamaConfig::from_json(config_text(R"(, "model_type": "mistral", "sliding_window": 64)")));
}

TEST_F(ModelTest, ShardedCheckpointLoadsLikeOneFile) {
  const LlamaConfig config = families()[0].config;  // qwen2: biases travel too
  const LlamaModel model = make_model(config, 131);
  const auto ids = row_tensor(random_ids(9, config.vocab_size, 132));
  const auto named = model.weights().named();
  for (const auto dtype : {at::kFloat, at::kBFloat16}) {
    const fs::path d = dir_ / (dtype == at::kFloat ? "f32" : "bf16");
    fs::create_directories(d);
    config.save(d / "config.json");
    // Three shards, tensors dealt round-robin (so q, k and v sit in different files).
    std::vector<std::vector<std::pair<std::string, at::Tensor>>> shards(3);
    nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
    for (std::size_t i = 0; i < named.size(); ++i) {
      const std::string file = "model-0000" + std::to_string(i % 3 + 1) + "-of-00003.safetensors";
      shards[i % 3].emplace_back(named[i].first, named[i].second.to(dtype));
      index["weight_map"][named[i].first] = file;
    }
    for (std::size_t s = 0; s < 3; ++s)
      eesched::runtime::write_safetensors(d / ("model-0000" + std::to_string(s + 1) + "-of-00003.safetensors"), shards[s], {{"format", "pt"}});
    std::ofstream(d / "model.safetensors.index.json") << index.dump(2);
    const LlamaModel loaded = LlamaModel::load(d);
    EXPECT_EQ(loaded.dtype(), dtype);  // bf16 stays bf16, from every shard
    if (dtype == at::kFloat) {
      EXPECT_TRUE(at::equal(loaded.forward(ids), model.forward(ids)));
    } else {
      // bf16 kept at load and widened in the kernels: the f32 model of the same rounded
      // weights, exactly.
      LlamaWeights rounded = cloned_weights(model);
      auto round = [](at::Tensor& t) { if (t.defined()) t = t.to(at::kBFloat16).to(at::kFloat); };
      round(rounded.embed_tokens), round(rounded.norm), round(rounded.lm_head);
      for (auto& l : rounded.layers)
        for (at::Tensor* t : {&l.input_layernorm, &l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.post_attention_layernorm,
                              &l.gate_proj, &l.up_proj, &l.down_proj, &l.q_bias, &l.k_bias, &l.v_bias})
          round(*t);
      EXPECT_TRUE(at::equal(loaded.forward(ids), LlamaModel(config, rounded).forward(ids)));
    }
  }
  // Errors name the file or the tensor.
  const fs::path d = dir_ / "f32";
  {
    auto index = nlohmann::json::parse(eesched::testing::read_file(d / "model.safetensors.index.json"));
    index["weight_map"]["model.norm.weight"] = "model-00001-of-00003.safetensors";  // not there
    std::ofstream(d / "model.safetensors.index.json") << index.dump();
    EXPECT_THAT(error_of([&] { LlamaModel::load(d); }), HasSubstr("model.norm.weight"));
    index["weight_map"]["model.norm.weight"] = "../elsewhere.safetensors";
    std::ofstream(d / "model.safetensors.index.json") << index.dump();
    EXPECT_THAT(error_of([&] { LlamaModel::load(d); }), HasSubstr("elsewhere"));
  }
  fs::remove(d / "model-00002-of-00003.safetensors");
  std::ofstream(d / "model.safetensors.index.json") << nlohmann::json{{"weight_map", {{"model.norm.weight", "model-00002-of-00003.safetensors"}}}}.dump();
  EXPECT_THAT(error_of([&] { LlamaModel::load(d); }), HasSubstr("model-00002-of-00003.safetensors"));
}

TEST_F(ModelTest, RealArchitecturePresetsAndShardedWriter) {
  // The presets' configs are what the real models' config.json files say (spot checks), and
  // survive config.json; the big weights themselves are for benchmarks, not tests.
  const auto llama = eesched::runtime::synthetic_config("llama3.2-1b");
  EXPECT_EQ(llama.vocab_size, 128256);
  EXPECT_EQ(llama.rope_scaling.type, "llama3");
  EXPECT_TRUE(llama.tie_word_embeddings);
  EXPECT_NEAR(static_cast<double>(llama.parameter_count()), 1.236e9, 0.01e9);
  const auto qwen25 = eesched::runtime::synthetic_config("qwen2.5-0.5b");
  EXPECT_TRUE(qwen25.qkv_bias);
  EXPECT_NEAR(static_cast<double>(qwen25.parameter_count()), 0.494e9, 0.01e9);
  const auto qwen3 = eesched::runtime::synthetic_config("qwen3-0.6b");
  EXPECT_EQ(qwen3.head_dim(), 128);
  EXPECT_NEAR(static_cast<double>(qwen3.parameter_count()), 0.596e9, 0.01e9);
  const auto smol = eesched::runtime::synthetic_config("smollm2-360m");
  EXPECT_NEAR(static_cast<double>(smol.parameter_count()), 0.362e9, 0.01e9);
  for (const auto& c : {llama, qwen25, qwen3, smol}) {
    EXPECT_EQ(c.torch_dtype, "bfloat16");
    const auto back = LlamaConfig::from_json(c.to_json());
    EXPECT_EQ(back.parameter_count(), c.parameter_count());
    EXPECT_EQ(back.rope_scaling, c.rope_scaling);
  }
  // The writer: bf16 in shards when over the limit, loading back to the bf16-rounded model.
  LlamaConfig tiny = families()[1].config;  // qwen3: q/k norms
  tiny.torch_dtype = "bfloat16";
  const LlamaModel model = make_model(tiny, 141);
  eesched::runtime::save_checkpoint(model, dir_ / "sharded", 4096);
  EXPECT_TRUE(fs::exists(dir_ / "sharded" / "model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(dir_ / "sharded" / "model.safetensors"));
  EXPECT_TRUE(fs::exists(dir_ / "sharded" / "model-00002-of-00003.safetensors") ||
              fs::exists(dir_ / "sharded" / "model-00002-of-00004.safetensors") ||
              fs::exists(dir_ / "sharded" / "model-00002-of-00005.safetensors"));
  eesched::runtime::save_checkpoint(model, dir_ / "single");
  EXPECT_TRUE(fs::exists(dir_ / "single" / "model.safetensors"));
  const auto ids = row_tensor(random_ids(7, tiny.vocab_size, 142));
  const auto a = LlamaModel::load(dir_ / "sharded").forward(ids);
  EXPECT_TRUE(at::equal(a, LlamaModel::load(dir_ / "single").forward(ids)));
  EXPECT_LT(max_abs_diff(a, model.forward(ids)), 0.5);  // bf16 rounding only
  EXPECT_EQ(eesched::runtime::SafetensorsFile::open(dir_ / "single" / "model.safetensors").tensors()[0].dtype,
            eesched::runtime::DType::BF16);
  EXPECT_EQ(LlamaModel::load(dir_ / "sharded").dtype(), at::kBFloat16);
}
}  // namespace

namespace {

// The batch-1 decoding kernel against ATen's matrix-vector product, on shapes that exercise the
// 8-row blocks (f32), the 16- and 8-wide vector loops and every row and column tail.
TEST(Gemv, MatchesAtenMvOnAwkwardShapes) {
  for (auto [rows, cols] :
       std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {3, 7}, {4, 8}, {5, 9}, {15, 31}, {37, 100}, {1280, 768}, {769, 2304}}) {
    auto w = at::randn({rows, cols});
    auto x = at::randn({cols});
    auto ours = eesched::runtime::gemv(w, x);
    auto ref = at::mv(w.to(at::kDouble), x.to(at::kDouble)).to(at::kFloat);
    EXPECT_LT((ours - ref).abs().max().item<double>(), 1e-4 * std::sqrt(static_cast<double>(cols))) << rows << "x" << cols;
  }
  EXPECT_THROW(eesched::runtime::gemv(at::randn({3, 4}), at::randn({5})), Error);
}


// Continuous batching's premise: a few rows of X multiplied together give each row bit for bit
// what gemv gives it alone, in every weight type, through the 4-row x 2-row tiles and every tail.
TEST(Gemv, EachRowOfAFewRowProductIsItsGemvBitForBit) {
  using eesched::runtime::gemv;
  using eesched::runtime::matmul_few_rows;
  for (const auto dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
    for (auto [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {3, 7}, {5, 9}, {9, 33}, {37, 100}, {300, 768}}) {
      const auto w = at::randn({rows, cols}).to(dtype);
      for (int64_t m = 1; m <= eesched::runtime::kFewRows; m += (m < 4 ? 1 : 5)) {
        const auto xs = at::randn({m, cols});
        const auto y = matmul_few_rows(w, xs);
        for (int64_t i = 0; i < m; ++i) EXPECT_TRUE(at::equal(y[i], gemv(w, xs[i]))) << rows << "x" << cols << " m " << m << " row " << i;
      }
    }
  }
}

// bf16 and f16 weights are streamed as stored and widened in registers: against a float64
// product of the same weights widened, on shapes that exercise the 4-row blocks (16-bit), the 16-
// and 8-wide loops and every tail, for one row (gemv), a few rows, and many rows (tiled prefill).
TEST(Gemv, HalfPrecisionWeightsMatchTheWidenedProduct) {
  using eesched::runtime::gemv;
  using eesched::runtime::matmul_few_rows;
  using eesched::runtime::matmul_float;
  for (const auto dtype : {at::kBFloat16, at::kHalf}) {
    for (auto [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{
             {1, 1}, {3, 7}, {4, 8}, {5, 9}, {6, 17}, {7, 33}, {15, 31}, {37, 100}, {1280, 768}, {769, 2304}, {2100, 4100}}) {
      SCOPED_TRACE(std::to_string(rows) + "x" + std::to_string(cols) + (dtype == at::kHalf ? " f16" : " bf16"));
      const auto w = at::randn({rows, cols}).to(dtype);
      const auto wide = w.to(at::kDouble);
      const double tol = 1e-4 * std::sqrt(static_cast<double>(cols));
      const auto x = at::randn({cols});
      const auto y = gemv(w, x);
      ASSERT_EQ(y.scalar_type(), at::kFloat);
      EXPECT_LT((y.to(at::kDouble) - at::mv(wide, x.to(at::kDouble))).abs().max().item<double>(), tol);
      // The f32 kernel on the widened matrix does the same products in the same order (it
      // streams more rows at once, which does not change any row's order).
      EXPECT_TRUE(at::equal(y, gemv(w.to(at::kFloat), x)));
      for (int64_t m : {int64_t{1}, int64_t{2}, int64_t{5}, eesched::runtime::kFewRows, int64_t{17}, int64_t{40}}) {
        if (rows * cols > 1000000 && m < eesched::runtime::kFewRows && m != 5) continue;
        const auto xs = at::randn({m, cols});
        const auto ref = at::mm(xs.to(at::kDouble), wide.t());
        const auto ours = matmul_float(w, xs);
        ASSERT_EQ(ours.sizes(), (at::IntArrayRef{m, rows}));
        EXPECT_LT((ours.to(at::kDouble) - ref).abs().max().item<double>(), tol) << "m " << m;
        if (m <= eesched::runtime::kFewRows) {
          EXPECT_TRUE(at::equal(ours, matmul_few_rows(w.to(at::kFloat), xs))) << "m " << m;
        }
      }
    }
  }
  // 2100 rows of 4100 bf16 columns at m = 40 ran as tiles of 16 MiB / (4 * 4100) = 1023 rows: three
  // tiles, the last one partial (checked above against the float64 product).
  static_assert(eesched::runtime::kWidenTileBytes / (4 * 4100) < 2100 / 2);
  EXPECT_THROW(gemv(at::randn({3, 4}).to(at::kDouble), at::randn({4})), Error);
  EXPECT_THROW(gemv(at::randn({3, 4}).to(at::kBFloat16), at::randn({5})), Error);
  EXPECT_THROW(matmul_float(at::randn({3, 4}).to(at::kHalf), at::randn({2, 5})), Error);
  EXPECT_STRNE(eesched::runtime::gemv_kernel(), "");
}

}  // namespace

namespace {

// The int8 kernel computes (q x) * scale, x rounded to int16 steps of max|x| / 32767: compare with
// that product done in double, on shapes that exercise every tail.
TEST(GemvInt8, MatchesTheDequantizedProduct) {
  for (auto [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {3, 7}, {4, 8}, {5, 9}, {37, 100}, {769, 2304}}) {
    auto w = at::randn({rows, cols});
    auto x = at::randn({cols});
    const auto q = eesched::runtime::quantize_rows_int8(w);
    ASSERT_EQ(q.values.scalar_type(), at::kChar);
    EXPECT_LE(q.values.abs().max().item<int>(), 127);
    auto dequant = q.values.to(at::kDouble) * q.scales.to(at::kDouble).unsqueeze(1);
    auto ref = at::mv(dequant, x.to(at::kDouble)).to(at::kFloat);
    auto ours = eesched::runtime::gemv_int8(q, x);
    // Error bound: half an int16 step of x per product, sum_k |Wq[r, k]| * max|x| / 65534, plus f32 rounding.
    const auto bound = dequant.abs().sum(1).to(at::kFloat) * (x.abs().max() / 65534.0) * 1.01 + 1e-5 * std::sqrt(static_cast<double>(cols));
    EXPECT_TRUE(((ours - ref).abs() <= bound + 1e-5 * ref.abs()).all().item<bool>()) << rows << "x" << cols;
    // Quantization error per weight is at most half a step.
    EXPECT_LE((dequant.to(at::kFloat) - w).abs().max().item<double>(), q.scales.max().item<double>() * 0.5 + 1e-6);
  }
  EXPECT_THROW(eesched::runtime::gemv_int8({at::zeros({3, 4}, at::kChar), at::ones({3})}, at::randn({5})), Error);
}

// Per-row scales make quantization commute with the EE permutations bitwise: quantize(permute(W))
// == permute(quantize(W)). Scales along the input dimension (group-wise) would not.
TEST(GemvInt8, QuantizationCommutesWithRowAndColumnPermutations) {
  auto w = at::randn({64, 96});
  auto rows = at::randperm(64, at::kLong), cols = at::randperm(96, at::kLong);
  const auto a = eesched::runtime::quantize_rows_int8(w.index_select(0, rows).index_select(1, cols));
  const auto b = eesched::runtime::quantize_rows_int8(w);
  EXPECT_TRUE(at::equal(a.values, b.values.index_select(0, rows).index_select(1, cols)));
  EXPECT_TRUE(at::equal(a.scales, b.scales.index_select(0, rows)));
  const auto zero = eesched::runtime::quantize_rows_int8(at::zeros({2, 5}));
  EXPECT_TRUE(at::equal(zero.values, at::zeros({2, 5}, at::kChar)));
}

}  // namespace
