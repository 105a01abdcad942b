#include "ee/attack_weights.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <optional>
#include <unordered_map>
#include <utility>

#include "ee/key.h"
#include "runtime/model.h"
#include "ee/transform.h"

namespace eesched::ee {
namespace {

constexpr int64_t kAmbiguous = -2;

// FNV-1a over a row's bytes: a signature of its values (collisions at 64 bits are negligible
// next to the ties real embeddings have, which are reported as ambiguous).
uint64_t hash_row(const float* row, int64_t n) {
  uint64_t h = 1469598103934665603ULL;
  const auto* bytes = reinterpret_cast<const unsigned char*>(row);
  for (int64_t i = 0; i < n * static_cast<int64_t>(sizeof(float)); ++i) h = (h ^ bytes[i]) * 1099511628211ULL;
  return h;
}

// Row signatures of m [rows, cols]: each row's hash, after sorting its values when `sorted`.
std::vector<uint64_t> signatures(const at::Tensor& m, bool sorted) {
  auto rows = m.to(at::kFloat).contiguous();
  if (sorted) rows = std::get<0>(rows.sort(1)).contiguous();
  const int64_t n = rows.size(0), cols = rows.size(1);
  std::vector<uint64_t> out(static_cast<std::size_t>(n));
  const float* p = rows.data_ptr<float>();
  for (int64_t r = 0; r < n; ++r) out[static_cast<std::size_t>(r)] = hash_row(p + r * cols, cols);
  return out;
}

// For each row of `enc`, the row of `pub` with the same signature when exactly one has it, else -1.
std::vector<int64_t> match(const std::vector<uint64_t>& enc, const std::vector<uint64_t>& pub) {
  std::unordered_map<uint64_t, int64_t> where;
  where.reserve(pub.size());
  for (std::size_t i = 0; i < pub.size(); ++i) {
    const auto [it, fresh] = where.emplace(pub[i], static_cast<int64_t>(i));
    if (!fresh) it->second = kAmbiguous;
  }
  std::vector<int64_t> out(enc.size(), -1);
  for (std::size_t i = 0; i < enc.size(); ++i) {
    const auto it = where.find(enc[i]);
    if (it != where.end() && it->second >= 0) out[i] = it->second;
  }
  return out;
}

std::vector<int64_t> match_rows(const at::Tensor& enc, const at::Tensor& pub) {
  if (!enc.defined() || !pub.defined() || enc.sizes() != pub.sizes()) return std::vector<int64_t>(enc.defined() ? enc.size(0) : 0, -1);
  return match(signatures(enc, true), signatures(pub, true));
}

// For each query row, the pool row of highest summed cosine similarity over the (query, pool)
// pairs (embedding and head together), and how far ahead of the runner-up it is.
struct Nearest {
  std::vector<int64_t> index;
  std::vector<float> margin;
};
Nearest nearest(const std::vector<std::pair<at::Tensor, at::Tensor>>& pairs) {
  auto unit = [](const at::Tensor& m) { auto f = m.to(at::kFloat); return f / f.norm(2, 1, true).clamp_min(1e-30); };
  std::vector<std::pair<at::Tensor, at::Tensor>> units;
  for (const auto& [q, p] : pairs) units.emplace_back(unit(q), unit(p).t().contiguous());
  const int64_t n = units.front().first.size(0);
  Nearest out;
  out.index.resize(static_cast<std::size_t>(n));
  out.margin.resize(static_cast<std::size_t>(n));
  constexpr int64_t kChunk = 1024;  // [1024, pool] similarities at a time
  for (int64_t start = 0; start < n; start += kChunk) {
    const int64_t m = std::min(kChunk, n - start);
    at::Tensor sim;
    for (const auto& [q, pt] : units) {
      auto s = q.narrow(0, start, m).matmul(pt);
      sim = sim.defined() ? sim + s : s;
    }
    const auto [top, idx] = sim.topk(std::min<int64_t>(2, sim.size(1)), 1);
    const auto t = top.contiguous(), i = idx.contiguous();
    for (int64_t r = 0; r < m; ++r) {
      const auto k = static_cast<std::size_t>(start + r);
      out.index[k] = i[r][0].item<int64_t>();
      out.margin[k] = t.size(1) > 1 ? t[r][0].item<float>() - t[r][1].item<float>() : 1.0f;
    }
  }
  return out;
}

// The orthogonal R minimizing ||A R - B|| (Procrustes): U V^T of the SVD of A^T B.
at::Tensor procrustes(const at::Tensor& a, const at::Tensor& b) {
  const auto [u, sv, vh] = at::linalg_svd(a.to(at::kDouble).t().matmul(b.to(at::kDouble)), false);
  return u.matmul(vh);
}

at::Tensor folded(const at::Tensor& reader, const at::Tensor& norm) {
  return reader.to(at::kDouble) * norm.to(at::kDouble).unsqueeze(0);
}

// The rotation attack (see attack_weights in the header). Fills vocab, rotation, residual
// (argmax of each row of the map) and ffn.
void attack_rotation(const runtime::LlamaWeights& enc, const runtime::LlamaWeights& pub, WeightsGuess& g) {
  const auto& e0 = enc.layers.front();
  const auto& p0 = pub.layers.front();
  const auto ge = folded(e0.gate_proj, e0.post_attention_layernorm), gp = folded(p0.gate_proj, p0.post_attention_layernorm);
  // G_enc = G_pub (rows permuted) R, so G_enc^T G_enc = R^T (G_pub^T G_pub) R: eigenvectors
  // V_enc = R^T V_pub S for some signs S, and R = V_pub S V_enc^T.
  const auto ve = std::get<1>(at::linalg_eigh(ge.t().matmul(ge))), vp = std::get<1>(at::linalg_eigh(gp.t().matmul(gp)));
  // Signs: column j of G_enc V_enc is s_j times column j of G_pub V_pub, rows permuted, so its
  // sorted values match those of +-(G_pub V_pub)_j.
  const auto pe = std::get<0>(ge.matmul(ve).sort(0)), pp = std::get<0>(gp.matmul(vp).sort(0));
  const auto plus = (pe - pp).pow(2).sum(0), minus = (pe + pp.flip(0)).pow(2).sum(0);
  const auto signs = at::where(plus <= minus, at::ones_like(plus), -at::ones_like(plus));
  auto r = (vp * signs.unsqueeze(0)).matmul(ve.t());

  // Head rows read the stream after the final norm: fold its weight, as for G (a tied head is
  // the embedding).
  const auto ph = folded(pub.lm_head.defined() ? pub.lm_head : pub.embed_tokens, pub.norm);
  const auto eh = folded(enc.lm_head.defined() ? enc.lm_head : enc.embed_tokens, enc.norm);
  const auto eemb = enc.embed_tokens.to(at::kDouble), pemb = pub.embed_tokens.to(at::kDouble);
  Nearest best;
  for (int round = 0; round < 3; ++round) {
    const auto rt = r.t();
    best = nearest({{eemb.matmul(rt), pemb}, {eh.matmul(rt), ph}});
    if (round == 2) break;
    // Refit R on the clearest half of the matches (at least 4 x hidden of them, when there are).
    std::vector<std::pair<float, int64_t>> order;
    for (std::size_t i = 0; i < best.index.size(); ++i) order.emplace_back(-best.margin[i], static_cast<int64_t>(i));
    std::sort(order.begin(), order.end());
    const auto hidden = static_cast<std::size_t>(eemb.size(1));
    const std::size_t take = std::min(order.size(), std::max(order.size() / 2, 4 * hidden));
    std::vector<int64_t> enc_rows, pub_rows;
    for (std::size_t k = 0; k < take; ++k) {
      enc_rows.push_back(order[k].second);
      pub_rows.push_back(best.index[static_cast<std::size_t>(order[k].second)]);
    }
    const auto ei = at::tensor(enc_rows, at::kLong), pi = at::tensor(pub_rows, at::kLong);
    r = procrustes(at::cat({pemb.index_select(0, pi), ph.index_select(0, pi)}), at::cat({eemb.index_select(0, ei), eh.index_select(0, ei)}));
  }
  g.vocab = best.index;
  g.rotation = r;
  // The residual as a permutation, where the map is one (its largest entry per column).
  const auto [mx, arg] = r.abs().max(0);
  g.residual.assign(static_cast<std::size_t>(r.size(1)), -1);
  for (int64_t j = 0; j < r.size(1); ++j)
    if (mx[j].item<double>() > 0.99) g.residual[static_cast<std::size_t>(j)] = arg[j].item<int64_t>();
  // FFN neurons: each layer's gate rows taken back to the public basis, nearest public row.
  g.ffn.clear();
  for (std::size_t l = 0; l < enc.layers.size() && l < pub.layers.size(); ++l) {
    const auto el = folded(enc.layers[l].gate_proj, enc.layers[l].post_attention_layernorm).matmul(r.t());
    g.ffn.push_back(nearest({{el, folded(pub.layers[l].gate_proj, pub.layers[l].post_attention_layernorm)}}).index);
  }
  g.method = "eigenvectors + procrustes";
}

double fraction(int64_t hit, int64_t total) { return total > 0 ? static_cast<double>(hit) / static_cast<double>(total) : 0.0; }

}  // namespace

WeightsGuess attack_weights(const runtime::LlamaWeights& encrypted, const runtime::LlamaWeights& pub) {
  WeightsGuess g;
  // Vocabulary: sorted embedding rows, and the head's when it is a matrix of its own; two unique
  // matches that disagree mean neither is trusted.
  g.method = "sorted rows";
  g.vocab = match_rows(encrypted.embed_tokens, pub.embed_tokens);
  if (encrypted.lm_head.defined() && pub.lm_head.defined()) {
    const auto head = match_rows(encrypted.lm_head, pub.lm_head);
    for (std::size_t i = 0; i < g.vocab.size(); ++i) {
      if (g.vocab[i] < 0) g.vocab[i] = head[i];
      else if (head[i] >= 0 && head[i] != g.vocab[i]) g.vocab[i] = -1;
    }
  }
  const auto matched = std::count_if(g.vocab.begin(), g.vocab.end(), [](int64_t v) { return v >= 0; });
  if (2 * matched < static_cast<int64_t>(g.vocab.size()) && !encrypted.layers.empty() && !pub.layers.empty()) {
    attack_rotation(encrypted, pub, g);
    return g;
  }
  // Residual: each encrypted column read down up to 64 recovered rows, against the public
  // columns down the rows they were matched to.
  std::vector<int64_t> enc_rows, pub_rows;
  for (std::size_t i = 0; i < g.vocab.size() && enc_rows.size() < 64; ++i)
    if (g.vocab[i] >= 0) enc_rows.push_back(static_cast<int64_t>(i)), pub_rows.push_back(g.vocab[i]);
  const int64_t hidden = encrypted.embed_tokens.size(1);
  g.residual.assign(static_cast<std::size_t>(hidden), -1);
  if (!enc_rows.empty()) {
    const auto e = encrypted.embed_tokens.index_select(0, at::tensor(enc_rows, at::kLong)).t();
    const auto p = pub.embed_tokens.index_select(0, at::tensor(pub_rows, at::kLong)).t();
    g.residual = match(signatures(e, false), signatures(p, false));
  }
  // FFN neurons: sorted rows of each layer's gate projection (its columns follow the residual).
  for (std::size_t l = 0; l < encrypted.layers.size() && l < pub.layers.size(); ++l)
    g.ffn.push_back(match_rows(encrypted.layers[l].gate_proj, pub.layers[l].gate_proj));
  return g;
}

// States in the encrypted basis taken back to the plaintext one with the guessed residual map.
at::Tensor to_public_basis(const at::Tensor& states, const WeightsGuess& weights) {
  auto x = states.to(at::kDouble);
  if (weights.rotation.defined()) {
    x = x.matmul(weights.rotation.t());
  } else {
    // The residual permutation guessed: encrypted dim i holds plaintext dim residual[i].
    auto back = at::zeros_like(x);
    for (std::size_t i = 0; i < weights.residual.size(); ++i)
      if (weights.residual[i] >= 0) back.select(1, weights.residual[i]).copy_(x.select(1, static_cast<int64_t>(i)));
    x = back;
  }
  return x;
}

std::vector<int64_t> attack_hidden_states(const at::Tensor& states, const runtime::LlamaWeights& pub, const WeightsGuess& weights) {
  return nearest({{to_public_basis(states, weights), pub.embed_tokens}}).index;
}

namespace {

// A one-layer copy of `model` whose head is the identity on the first `hidden` logits, so its
// logits are the first layer's output, RMS-normalized; nullopt when the vocabulary is smaller
// than hidden. Built once per model: the constructor re-lays the weights out.
std::optional<runtime::LlamaModel> first_layer_probe(const runtime::LlamaModel& model) {
  auto w = model.weights();
  auto config = model.config();
  const int64_t d = config.hidden_size;
  if (config.vocab_size < d) return std::nullopt;
  w.layers.resize(1);
  config.num_hidden_layers = 1;
  config.tie_word_embeddings = false;
  w.norm = at::ones({d}, at::kFloat);
  w.lm_head = at::zeros({config.vocab_size, d}, at::kFloat);
  w.lm_head.narrow(0, 0, d).copy_(at::eye(d, at::kFloat));
  return runtime::LlamaModel(config, w);
}

at::Tensor probe_output(const runtime::LlamaModel& probe, const at::Tensor& ids) {
  return probe.forward(ids).narrow(2, 0, probe.config().hidden_size).to(at::kFloat);
}

}  // namespace

at::Tensor first_layer_output(const runtime::LlamaModel& model, const at::Tensor& ids) {
  const auto probe = first_layer_probe(model);
  return probe ? probe_output(*probe, ids) : at::Tensor();
}

std::vector<int64_t> attack_hidden_after_first_layer(const at::Tensor& states, const runtime::LlamaModel& pub, const WeightsGuess& weights,
                                                     int64_t shortlist) {
  const auto x = to_public_basis(states, weights).to(at::kFloat);
  const auto probe = first_layer_probe(pub);
  if (!probe) return std::vector<int64_t>(static_cast<std::size_t>(x.size(0)), -1);
  // The shortlist: each token's first-layer output alone at position 0 (its own embedding and
  // MLP, attention to itself only), centred, against the centred states.
  const int64_t vocab = pub.config().vocab_size;
  std::vector<at::Tensor> alone;
  for (int64_t start = 0; start < vocab; start += 4096)
    alone.push_back(probe_output(*probe, at::arange(start, std::min(vocab, start + 4096), at::kLong).unsqueeze(1)).select(1, 0));
  const auto e = at::cat(alone);
  auto unit = [](const at::Tensor& m) { return m / m.norm(2, 1, true).clamp_min(1e-30); };
  const auto sim = unit(x - x.mean(0, true)).matmul(unit(e - e.mean(0, true)).t());
  const auto cand = std::get<1>(sim.topk(std::min<int64_t>(shortlist, e.size(0)), 1)).contiguous();
  const int64_t n = x.size(0), k = cand.size(1);
  std::vector<int64_t> read;
  for (int64_t i = 0; i < n; ++i) {
    auto ids = at::empty({k, i + 1}, at::kLong);
    if (i > 0) ids.narrow(1, 0, i).copy_(at::tensor(read, at::kLong).unsqueeze(0).expand({k, i}));
    ids.select(1, i).copy_(cand[i]);
    const auto h = probe_output(*probe, ids).select(1, i);  // [k, hidden], normalized
    const auto target = x[i] / x[i].pow(2).mean().sqrt().clamp_min(1e-30);
    read.push_back(cand[i][(h - target.unsqueeze(0)).pow(2).sum(1).argmin().item<int64_t>()].item<int64_t>());
  }
  return read;
}

WeightsAttackScore score_weights_attack(const WeightsGuess& guess, const ModelSecrets& truth, const std::vector<int64_t>& text_ids) {
  WeightsAttackScore s;
  auto right = [](const std::vector<int64_t>& guessed, const std::vector<int64_t>& moves_to, std::size_t plain) {
    const auto enc = static_cast<std::size_t>(moves_to[plain]);
    return enc < guessed.size() && guessed[enc] == static_cast<int64_t>(plain);
  };
  int64_t hit = 0;
  for (std::size_t t = 0; t < truth.vocab.size(); ++t) hit += right(guess.vocab, truth.vocab, t);
  s.vocab_recovered = fraction(hit, static_cast<int64_t>(truth.vocab.size()));
  if (text_ids.empty()) {
    s.tokens_recovered = s.vocab_recovered;
  } else {
    int64_t tokens = 0;
    for (const auto id : text_ids)
      tokens += id >= 0 && static_cast<std::size_t>(id) < truth.vocab.size() && right(guess.vocab, truth.vocab, static_cast<std::size_t>(id));
    s.tokens_recovered = fraction(tokens, static_cast<int64_t>(text_ids.size()));
  }
  hit = 0;
  if (guess.rotation.defined() && truth.rotation.defined()) {
    // The true map: R, then dims move by the residual permutation.
    const auto t = truth.rotation.index_select(1, at::tensor(inverse(truth.residual), at::kLong));
    const auto cos = (t * guess.rotation).sum(1) / (t.norm(2, 1) * guess.rotation.norm(2, 1)).clamp_min(1e-30);
    hit = (cos > 0.99).sum().item<int64_t>();
  } else if (guess.rotation.defined()) {
    // A permutation solved as a rotation: right where the map's row peaks at the true dim.
    const auto [mx, arg] = guess.rotation.abs().max(1);
    for (std::size_t i = 0; i < truth.residual.size(); ++i)
      hit += mx[static_cast<int64_t>(i)].item<double>() > 0.99 && arg[static_cast<int64_t>(i)].item<int64_t>() == truth.residual[i];
  } else {
    for (std::size_t i = 0; i < truth.residual.size(); ++i) hit += right(guess.residual, truth.residual, i);
  }
  s.residual_recovered = fraction(hit, static_cast<int64_t>(truth.residual.size()));
  int64_t neurons = 0;
  hit = 0;
  for (std::size_t l = 0; l < truth.layers.size() && l < guess.ffn.size(); ++l)
    for (std::size_t i = 0; i < truth.layers[l].ffn.size(); ++i, ++neurons) hit += right(guess.ffn[l], truth.layers[l].ffn, i);
  s.ffn_recovered = fraction(hit, neurons);
  return s;
}

}  // namespace eesched::ee
