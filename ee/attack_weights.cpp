#include "ee/attack_weights.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <unordered_map>

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

double fraction(int64_t hit, int64_t total) { return total > 0 ? static_cast<double>(hit) / static_cast<double>(total) : 0.0; }

}  // namespace

WeightsGuess attack_weights(const runtime::LlamaWeights& encrypted, const runtime::LlamaWeights& pub) {
  WeightsGuess g;
  // Vocabulary: sorted embedding rows, and the head's when it is a matrix of its own; two unique
  // matches that disagree mean neither is trusted.
  g.vocab = match_rows(encrypted.embed_tokens, pub.embed_tokens);
  if (encrypted.lm_head.defined() && pub.lm_head.defined()) {
    const auto head = match_rows(encrypted.lm_head, pub.lm_head);
    for (std::size_t i = 0; i < g.vocab.size(); ++i) {
      if (g.vocab[i] < 0) g.vocab[i] = head[i];
      else if (head[i] >= 0 && head[i] != g.vocab[i]) g.vocab[i] = -1;
    }
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
  for (std::size_t i = 0; i < truth.residual.size(); ++i) hit += right(guess.residual, truth.residual, i);
  s.residual_recovered = fraction(hit, static_cast<int64_t>(truth.residual.size()));
  int64_t neurons = 0;
  hit = 0;
  for (std::size_t l = 0; l < truth.layers.size() && l < guess.ffn.size(); ++l)
    for (std::size_t i = 0; i < truth.layers[l].ffn.size(); ++i, ++neurons) hit += right(guess.ffn[l], truth.layers[l].ffn, i);
  s.ffn_recovered = fraction(hit, neurons);
  return s;
}

}  // namespace eesched::ee
