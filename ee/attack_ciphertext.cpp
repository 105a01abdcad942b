#include "ee/attack_ciphertext.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <stdexcept>
#include <unordered_map>

#include "runtime/generate.h"
#include "runtime/model.h"

namespace eesched::ee {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

uint64_t pair_key(int64_t a, int64_t b) { return (static_cast<uint64_t>(a) << 32) | static_cast<uint64_t>(b); }

// Completes a partial assignment to a bijection: each unset entry (-1) takes the lowest id not
// yet `used`, in order.
void fill_in_order(std::vector<int64_t>& assignment, std::vector<char>& used) {
  int64_t c = 0;
  for (auto& a : assignment) {
    if (a >= 0) continue;
    while (used[static_cast<std::size_t>(c)]) ++c;
    a = c;
    used[static_cast<std::size_t>(c)] = 1;
  }
}

// The public corpus as a Witten-Bell smoothed bigram model over a candidate list of plaintext
// ids (indices into `plain`): log P(q | p) = log((c(p q) + d(p) Pu(q)) / (c(p) + d(p))), d(p) the
// number of distinct successors of p, Pu the add-half unigram model.
class PlainBigrams {
 public:
  PlainBigrams(const std::vector<int64_t>& corpus, int64_t vocab) : uni_(static_cast<std::size_t>(vocab), 0) {
    std::vector<int64_t> first(static_cast<std::size_t>(vocab), 0), distinct(static_cast<std::size_t>(vocab), 0);
    for (std::size_t t = 0; t < corpus.size(); ++t) {
      ++uni_[static_cast<std::size_t>(corpus[t])];
      if (t + 1 < corpus.size()) {
        auto& c = pairs_[pair_key(corpus[t], corpus[t + 1])];
        if (c++ == 0) ++distinct[static_cast<std::size_t>(corpus[t])];
        ++first[static_cast<std::size_t>(corpus[t])];
      }
    }
    const double total = static_cast<double>(corpus.size()) + 0.5 * static_cast<double>(vocab);
    log_uni_.resize(uni_.size());
    pu_.resize(uni_.size());
    for (std::size_t i = 0; i < uni_.size(); ++i) {
      pu_[i] = (static_cast<double>(uni_[i]) + 0.5) / total;
      log_uni_[i] = static_cast<float>(std::log(pu_[i]));
    }
    first_ = std::move(first);
    distinct_ = std::move(distinct);
  }
  const std::vector<int64_t>& unigram() const { return uni_; }
  float log_uni(int64_t p) const { return log_uni_[static_cast<std::size_t>(p)]; }
  float log_bi(int64_t p, int64_t q) const {
    const auto ps = static_cast<std::size_t>(p), qs = static_cast<std::size_t>(q);
    if (first_[ps] == 0) return log_uni_[qs];
    const auto it = pairs_.find(pair_key(p, q));
    const double c = it == pairs_.end() ? 0.0 : static_cast<double>(it->second);
    const double d = static_cast<double>(std::max<int64_t>(1, distinct_[ps]));
    return static_cast<float>(std::log((c + d * pu_[qs]) / (static_cast<double>(first_[ps]) + d)));
  }

 private:
  std::vector<int64_t> uni_, first_, distinct_;
  std::vector<double> pu_;
  std::vector<float> log_uni_;
  std::unordered_map<uint64_t, int64_t> pairs_;
};

// Rectangular assignment (rows <= cols), minimizing the summed cost: the shortest augmenting
// path Hungarian method, O(rows^2 cols). Returns the column of each row.
std::vector<int64_t> hungarian(const std::vector<double>& cost, int64_t rows, int64_t cols) {
  const double inf = std::numeric_limits<double>::infinity();
  const auto n = static_cast<std::size_t>(rows), m = static_cast<std::size_t>(cols);
  std::vector<double> u(n + 1, 0), v(m + 1, 0);
  std::vector<std::size_t> p(m + 1, 0), way(m + 1, 0);
  for (std::size_t i = 1; i <= n; ++i) {
    p[0] = i;
    std::size_t j0 = 0;
    std::vector<double> minv(m + 1, inf);
    std::vector<char> used(m + 1, 0);
    do {
      used[j0] = 1;
      const std::size_t i0 = p[j0];
      double delta = inf;
      std::size_t j1 = 0;
      const double* row = &cost[(i0 - 1) * m];
      for (std::size_t j = 1; j <= m; ++j) {
        if (used[j]) continue;
        const double cur = row[j - 1] - u[i0] - v[j];
        if (cur < minv[j]) {
          minv[j] = cur;
          way[j] = j0;
        }
        if (minv[j] < delta) {
          delta = minv[j];
          j1 = j;
        }
      }
      for (std::size_t j = 0; j <= m; ++j) {
        if (used[j]) {
          u[p[j]] += delta;
          v[j] -= delta;
        } else {
          minv[j] -= delta;
        }
      }
      j0 = j1;
    } while (p[j0] != 0);
    do {
      const std::size_t j1 = way[j0];
      p[j0] = p[j1];
      j0 = j1;
    } while (j0 != 0);
  }
  std::vector<int64_t> col_of(n, -1);
  for (std::size_t j = 1; j <= m; ++j)
    if (p[j] != 0) col_of[p[j] - 1] = static_cast<int64_t>(j - 1);
  return col_of;
}

// Simulated annealing over a bijection between slots (encrypted ids: the observed ones by
// falling count, then the rest) and candidates (plaintext ids by falling corpus count).
class Search {
 public:
  Search(const std::vector<std::vector<int64_t>>& cipher, const std::vector<int64_t>& corpus, int64_t vocab,
         const CiphertextAttackOptions& o)
      : vocab_(vocab), plain_(corpus, vocab), opt_(o) {
    // Ciphertext counts.
    std::vector<int64_t> count(static_cast<std::size_t>(vocab), 0), starts(static_cast<std::size_t>(vocab), 0);
    std::unordered_map<uint64_t, int64_t> pairs;
    for (const auto& seq : cipher) {
      if (seq.empty()) continue;
      ++starts[static_cast<std::size_t>(seq[0])];
      for (std::size_t t = 0; t < seq.size(); ++t) {
        ++count[static_cast<std::size_t>(seq[t])];
        if (t + 1 < seq.size()) ++pairs[pair_key(seq[t], seq[t + 1])];
      }
    }
    std::vector<char> pinned_cipher(static_cast<std::size_t>(vocab), 0), pinned_plain(static_cast<std::size_t>(vocab), 0);
    for (const auto& [p, c] : o.known) {
      pinned_cipher[static_cast<std::size_t>(c)] = 1;
      pinned_plain[static_cast<std::size_t>(p)] = 1;
    }
    std::vector<int64_t> active;
    for (int64_t c = 0; c < vocab; ++c)
      if (count[static_cast<std::size_t>(c)] > 0 || pinned_cipher[static_cast<std::size_t>(c)]) active.push_back(c);
    std::stable_sort(active.begin(), active.end(),
                     [&](int64_t a, int64_t b) { return count[static_cast<std::size_t>(a)] > count[static_cast<std::size_t>(b)]; });
    active_ = static_cast<int64_t>(active.size());
    // Small vocabularies: every id is a slot and a candidate. Large ones: the observed ids, and
    // twice as many of the corpus's most frequent tokens (the rest being too rare to tell apart).
    const int64_t m = vocab <= 4096 ? vocab : std::min(vocab, std::max(2 * active_, active_ + 256));
    std::vector<int64_t> by_count(static_cast<std::size_t>(vocab));
    std::iota(by_count.begin(), by_count.end(), 0);
    const auto& uni = plain_.unigram();
    std::stable_sort(by_count.begin(), by_count.end(),
                     [&](int64_t a, int64_t b) { return uni[static_cast<std::size_t>(a)] > uni[static_cast<std::size_t>(b)]; });
    // Candidates: the known plaintext ids first (whatever their count), then by count.
    for (const auto& kp : o.known) cand_.push_back(kp.first);
    for (const int64_t p : by_count) {
      if (static_cast<int64_t>(cand_.size()) >= m) break;
      if (!pinned_plain[static_cast<std::size_t>(p)]) cand_.push_back(p);
    }
    slot_ = active;
    std::vector<char> is_slot(static_cast<std::size_t>(vocab), 0);
    for (const int64_t c : slot_) is_slot[static_cast<std::size_t>(c)] = 1;
    for (int64_t c = 0; c < vocab && static_cast<int64_t>(slot_.size()) < m; ++c)
      if (!is_slot[static_cast<std::size_t>(c)]) slot_.push_back(c);
    m_ = static_cast<int64_t>(slot_.size());
    if (static_cast<int64_t>(cand_.size()) < m_) throw std::logic_error("attack_ciphertext: fewer candidates than slots");
    cand_.resize(static_cast<std::size_t>(m_));

    // The starting guess: known pairs pinned, the rest matched by rank.
    std::unordered_map<int64_t, int64_t> slot_index;
    for (int64_t i = 0; i < m_; ++i) slot_index[slot_[static_cast<std::size_t>(i)]] = i;
    f_.assign(static_cast<std::size_t>(m_), -1);
    pinned_.assign(static_cast<std::size_t>(m_), 0);
    for (std::size_t k = 0; k < o.known.size(); ++k) {
      const auto i = static_cast<std::size_t>(slot_index.at(o.known[k].second));
      f_[i] = static_cast<int64_t>(k);
      pinned_[i] = 1;
    }
    int64_t next = static_cast<int64_t>(o.known.size());
    for (auto& fi : f_)
      if (fi < 0) fi = next++;

    out_.resize(static_cast<std::size_t>(m_));
    in_.resize(static_cast<std::size_t>(m_));
    start_.assign(static_cast<std::size_t>(m_), 0);
    for (const auto& [k, c] : pairs) {
      const auto a = static_cast<std::size_t>(slot_index.at(static_cast<int64_t>(k >> 32)));
      const auto b = static_cast<std::size_t>(slot_index.at(static_cast<int64_t>(k & 0xffffffffu)));
      out_[a].push_back({static_cast<int32_t>(b), static_cast<float>(c)});
      in_[b].push_back({static_cast<int32_t>(a), static_cast<float>(c)});
    }
    for (int64_t i = 0; i < active_; ++i)
      start_[static_cast<std::size_t>(i)] = static_cast<float>(starts[static_cast<std::size_t>(slot_[static_cast<std::size_t>(i)])]);
    // Dense log-probability table over candidates when small enough.
    if (m_ <= 4096) {
      dense_.resize(static_cast<std::size_t>(m_ * m_));
      for (int64_t a = 0; a < m_; ++a)
        for (int64_t b = 0; b < m_; ++b)
          dense_[static_cast<std::size_t>(a * m_ + b)] = plain_.log_bi(cand_[static_cast<std::size_t>(a)], cand_[static_cast<std::size_t>(b)]);
    }
  }

  int64_t active() const { return active_; }

  void anneal(double seconds) {
    const int64_t movable = active_;
    if (movable < 1 || m_ < 2) return;
    auto& rng = rng_;
    const auto t0 = Clock::now();
    const int64_t window = 8 + m_ / 64;
    const double t_start = 1.0, t_end = 0.02;
    double temp = t_start;
    int64_t accepted = 0, proposals = 0, idle = 0;
    double gained = 0;
    // Stop when the budget is spent, or when nothing has improved for long after cooling down.
    const int64_t idle_limit = std::max<int64_t>(200000, 400 * m_);
    for (;; ++proposals) {
      if ((proposals & 4095) == 0) {
        const double frac = since(t0) / std::max(1e-9, seconds);
        if (frac >= 1.0) break;
        temp = t_start * std::pow(t_end / t_start, frac);
        if (frac > 0.5 && idle > idle_limit) break;
      }
      const auto i = static_cast<int64_t>(rng() % static_cast<uint64_t>(movable));
      int64_t j;
      if (rng() & 1) {
        j = i - window + static_cast<int64_t>(rng() % static_cast<uint64_t>(2 * window + 1));
        if (j < 0 || j >= m_) continue;
      } else {
        j = static_cast<int64_t>(rng() % static_cast<uint64_t>(m_));
      }
      if (i == j || pinned_[static_cast<std::size_t>(i)] || pinned_[static_cast<std::size_t>(j)]) continue;
      const auto fi = f_[static_cast<std::size_t>(i)], fj = f_[static_cast<std::size_t>(j)];
      const double delta = local(i, j, fj, fi) - local(i, j, fi, fj);
      if (delta > 0 || (temp > 0 && std::uniform_real_distribution<double>(0, 1)(rng) < std::exp(delta / temp))) {
        f_[static_cast<std::size_t>(i)] = fj;
        f_[static_cast<std::size_t>(j)] = fi;
        ++accepted;
        gained += delta;
        idle = delta > 1e-9 ? 0 : idle + 1;
      } else {
        ++idle;
      }
    }
    if (opt_.progress)
      opt_.progress(fmt::format("search: {} proposals, {} accepted, log-likelihood +{:.0f} in {:.1f} s", proposals, accepted,
                                gained, since(t0)));
  }

  // Every observed id at once: score each candidate for it given its neighbours' current
  // guesses, and take the best one-to-one assignment (Hungarian). A big move where swaps get
  // stuck. Returns how many guesses changed.
  int64_t assign_round() {
    std::vector<int64_t> rows, cols;
    std::vector<char> taken(static_cast<std::size_t>(m_), 0);
    for (int64_t i = 0; i < m_; ++i)
      if (pinned_[static_cast<std::size_t>(i)]) taken[static_cast<std::size_t>(f_[static_cast<std::size_t>(i)])] = 1;
    for (int64_t i = 0; i < active_; ++i)
      if (!pinned_[static_cast<std::size_t>(i)]) rows.push_back(i);
    for (int64_t k = 0; k < m_; ++k)
      if (!taken[static_cast<std::size_t>(k)]) cols.push_back(k);
    const auto n = static_cast<int64_t>(rows.size()), m = static_cast<int64_t>(cols.size());
    if (n == 0) return 0;
    std::vector<double> cost(static_cast<std::size_t>(n * m), 0.0);
    for (int64_t r = 0; r < n; ++r) {
      const auto i = static_cast<std::size_t>(rows[static_cast<std::size_t>(r)]);
      double* row = &cost[static_cast<std::size_t>(r * m)];
      for (int64_t q = 0; q < m; ++q) {
        const int64_t k = cols[static_cast<std::size_t>(q)];
        double sc = start_[i] * plain_.log_uni(cand_[static_cast<std::size_t>(k)]);
        for (const auto& e : out_[i]) sc += e.count * lb(k, static_cast<std::size_t>(e.other) == i ? k : f_[static_cast<std::size_t>(e.other)]);
        for (const auto& e : in_[i])
          if (static_cast<std::size_t>(e.other) != i) sc += e.count * lb(f_[static_cast<std::size_t>(e.other)], k);
        row[q] = -sc;
      }
    }
    const auto col_of = hungarian(cost, n, m);
    std::vector<char> used(static_cast<std::size_t>(m_), 0);
    int64_t changed = 0;
    for (int64_t i = 0; i < m_; ++i)
      if (pinned_[static_cast<std::size_t>(i)]) used[static_cast<std::size_t>(f_[static_cast<std::size_t>(i)])] = 1;
    for (int64_t r = 0; r < n; ++r) {
      const auto i = static_cast<std::size_t>(rows[static_cast<std::size_t>(r)]);
      const int64_t k = cols[static_cast<std::size_t>(col_of[static_cast<std::size_t>(r)])];
      changed += f_[i] != k;
      f_[i] = k;
      used[static_cast<std::size_t>(k)] = 1;
    }
    // The unobserved slots take the candidates left, most frequent first.
    int64_t k = 0;
    for (int64_t i = active_; i < m_; ++i) {
      if (pinned_[static_cast<std::size_t>(i)]) continue;
      while (used[static_cast<std::size_t>(k)]) ++k;
      f_[static_cast<std::size_t>(i)] = k;
      used[static_cast<std::size_t>(k)] = 1;
    }
    return changed;
  }

  // plaintext -> encrypted, a full bijection: the search's pairs, the rest filled in order.
  std::vector<int64_t> plain_to_cipher() const {
    std::vector<int64_t> g(static_cast<std::size_t>(vocab_), -1);
    std::vector<char> used(static_cast<std::size_t>(vocab_), 0);
    for (int64_t i = 0; i < m_; ++i) {
      const int64_t p = cand_[static_cast<std::size_t>(f_[static_cast<std::size_t>(i)])], c = slot_[static_cast<std::size_t>(i)];
      g[static_cast<std::size_t>(p)] = c;
      used[static_cast<std::size_t>(c)] = 1;
    }
    fill_in_order(g, used);
    return g;
  }

  // encrypted -> plaintext for the observed ids (-1 for the rest).
  std::vector<int64_t> guess() const {
    std::vector<int64_t> out(static_cast<std::size_t>(vocab_), -1);
    for (int64_t i = 0; i < active_; ++i)
      out[static_cast<std::size_t>(slot_[static_cast<std::size_t>(i)])] = cand_[static_cast<std::size_t>(f_[static_cast<std::size_t>(i)])];
    return out;
  }

 private:
  struct Edge {
    int32_t other;
    float count;
  };
  float lb(int64_t a, int64_t b) const {
    if (!dense_.empty()) return dense_[static_cast<std::size_t>(a * m_ + b)];
    return plain_.log_bi(cand_[static_cast<std::size_t>(a)], cand_[static_cast<std::size_t>(b)]);
  }
  // The log-likelihood of every ciphertext bigram that touches slot i or j, and of their
  // sequence starts, with i guessed as candidate fi and j as fj.
  double local(int64_t i, int64_t j, int64_t fi, int64_t fj) const {
    auto F = [&](int64_t x) { return x == i ? fi : x == j ? fj : f_[static_cast<std::size_t>(x)]; };
    double s = 0;
    for (const auto& e : out_[static_cast<std::size_t>(i)]) s += e.count * lb(fi, F(e.other));
    for (const auto& e : out_[static_cast<std::size_t>(j)]) s += e.count * lb(fj, F(e.other));
    for (const auto& e : in_[static_cast<std::size_t>(i)])
      if (e.other != i && e.other != j) s += e.count * lb(F(e.other), fi);
    for (const auto& e : in_[static_cast<std::size_t>(j)])
      if (e.other != i && e.other != j) s += e.count * lb(F(e.other), fj);
    s += start_[static_cast<std::size_t>(i)] * plain_.log_uni(cand_[static_cast<std::size_t>(fi)]);
    s += start_[static_cast<std::size_t>(j)] * plain_.log_uni(cand_[static_cast<std::size_t>(fj)]);
    return s;
  }

  int64_t vocab_;
  PlainBigrams plain_;
  const CiphertextAttackOptions& opt_;
  std::mt19937_64 rng_{opt_.seed};
  int64_t active_ = 0, m_ = 0;
  std::vector<int64_t> slot_, cand_, f_;  // f_[slot] = candidate index
  std::vector<char> pinned_;
  std::vector<std::vector<Edge>> out_, in_;
  std::vector<float> start_;
  std::vector<float> dense_;
};

// Refinement with the model: returns the next plaintext -> encrypted bijection and how many ids
// it changed.
std::pair<std::vector<int64_t>, int64_t> refine_pass(const CipherLM& lm, const std::vector<int64_t>& corpus,
                                                     const std::vector<int64_t>& g, int64_t tokens, std::mt19937_64& rng,
                                                     const std::vector<std::pair<int64_t, int64_t>>& known) {
  const int64_t v = lm.vocab_size;
  int64_t len = std::min<int64_t>(128, static_cast<int64_t>(corpus.size()));
  if (lm.max_length > 0) len = std::min(len, lm.max_length);
  const int64_t chunks = std::max<int64_t>(1, tokens / std::max<int64_t>(1, len));
  std::vector<double> s(static_cast<std::size_t>(v * v), 0.0);
  std::vector<int64_t> seen(static_cast<std::size_t>(v), 0);
  constexpr int64_t kBatch = 8;
  for (int64_t c0 = 0; c0 < chunks; c0 += kBatch) {
    std::vector<std::vector<int64_t>> plain_rows, rows;
    for (int64_t c = c0; c < std::min(chunks, c0 + kBatch); ++c) {
      const auto start = static_cast<int64_t>(rng() % static_cast<uint64_t>(static_cast<int64_t>(corpus.size()) - len + 1));
      std::vector<int64_t> p(corpus.begin() + start, corpus.begin() + start + len), e(static_cast<std::size_t>(len));
      for (int64_t t = 0; t < len; ++t) e[static_cast<std::size_t>(t)] = g[static_cast<std::size_t>(p[static_cast<std::size_t>(t)])];
      plain_rows.push_back(std::move(p));
      rows.push_back(std::move(e));
    }
    const auto lp = lm.log_probs(rows);
    for (std::size_t b = 0; b < rows.size(); ++b)
      for (int64_t t = 0; t + 1 < len; ++t) {
        const auto y = static_cast<std::size_t>(plain_rows[b][static_cast<std::size_t>(t + 1)]);
        ++seen[y];
        const float* src = &lp[(b * static_cast<std::size_t>(len) + static_cast<std::size_t>(t)) * static_cast<std::size_t>(v)];
        double* dst = &s[y * static_cast<std::size_t>(v)];
        for (int64_t c = 0; c < v; ++c) dst[c] += src[c];
      }
  }
  std::vector<char> pinned_plain(static_cast<std::size_t>(v), 0), pinned_cipher(static_cast<std::size_t>(v), 0);
  std::vector<int64_t> next(static_cast<std::size_t>(v), -1);
  for (const auto& [p, c] : known) {
    pinned_plain[static_cast<std::size_t>(p)] = pinned_cipher[static_cast<std::size_t>(c)] = 1;
    next[static_cast<std::size_t>(p)] = c;
  }
  std::vector<int64_t> rows_y, cols_c;
  for (int64_t y = 0; y < v; ++y)
    if (seen[static_cast<std::size_t>(y)] > 0 && !pinned_plain[static_cast<std::size_t>(y)]) rows_y.push_back(y);
  for (int64_t c = 0; c < v; ++c)
    if (!pinned_cipher[static_cast<std::size_t>(c)]) cols_c.push_back(c);
  const auto n = static_cast<int64_t>(rows_y.size()), m = static_cast<int64_t>(cols_c.size());
  std::vector<double> cost(static_cast<std::size_t>(n * m));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t k = 0; k < m; ++k)
      cost[static_cast<std::size_t>(r * m + k)] =
          -s[static_cast<std::size_t>(rows_y[static_cast<std::size_t>(r)] * v + cols_c[static_cast<std::size_t>(k)])];
  const auto col_of = hungarian(cost, n, m);
  std::vector<char> used(static_cast<std::size_t>(v), 0);
  for (const auto& kc : known) used[static_cast<std::size_t>(kc.second)] = 1;
  for (int64_t r = 0; r < n; ++r) {
    const int64_t c = cols_c[static_cast<std::size_t>(col_of[static_cast<std::size_t>(r)])];
    next[static_cast<std::size_t>(rows_y[static_cast<std::size_t>(r)])] = c;
    used[static_cast<std::size_t>(c)] = 1;
  }
  // Tokens this pass did not see keep their guess when it is still free.
  for (int64_t y = 0; y < v; ++y)
    if (next[static_cast<std::size_t>(y)] < 0 && !used[static_cast<std::size_t>(g[static_cast<std::size_t>(y)])]) {
      next[static_cast<std::size_t>(y)] = g[static_cast<std::size_t>(y)];
      used[static_cast<std::size_t>(g[static_cast<std::size_t>(y)])] = 1;
    }
  fill_in_order(next, used);
  int64_t changed = 0;
  for (int64_t y = 0; y < v; ++y) changed += next[static_cast<std::size_t>(y)] != g[static_cast<std::size_t>(y)];
  return {next, changed};
}

}  // namespace

CipherLM cipher_lm(const runtime::LlamaModel& encrypted) {
  CipherLM lm;
  lm.vocab_size = encrypted.config().vocab_size;
  lm.bos = encrypted.config().bos_token_id;
  lm.max_length = encrypted.config().max_position_embeddings;
  const int64_t eos = encrypted.config().eos_token_id;
  lm.log_probs = [&encrypted](const std::vector<std::vector<int64_t>>& rows) {
    c10::InferenceMode guard;
    const auto b = static_cast<int64_t>(rows.size());
    const auto t = b == 0 ? 0 : static_cast<int64_t>(rows[0].size());
    auto ids = at::empty({b, t}, at::kLong);
    auto* p = ids.data_ptr<int64_t>();
    for (const auto& r : rows) {
      if (static_cast<int64_t>(r.size()) != t) throw std::invalid_argument("cipher_lm: rows of unequal length");
      p = std::copy(r.begin(), r.end(), p);
    }
    const auto lp = at::log_softmax(encrypted.forward(ids).to(at::kFloat), -1).contiguous();
    return std::vector<float>(lp.data_ptr<float>(), lp.data_ptr<float>() + lp.numel());
  };
  lm.sample = [&encrypted, bos = lm.bos, eos](int64_t rows, int64_t length, uint64_t seed) {
    runtime::GenerateOptions o;
    o.generation.max_new_tokens = length;
    o.generation.temperature = 1.0;
    o.generation.seed = seed;
    if (eos >= 0) o.generation.stop_ids = {eos};
    const std::vector<std::vector<int64_t>> prompts(static_cast<std::size_t>(rows), std::vector<int64_t>{bos});
    auto r = runtime::generate(encrypted, prompts, o);
    for (auto& seq : r.tokens) seq.insert(seq.begin(), bos);
    return r.tokens;
  };
  return lm;
}

CiphertextAttackResult attack_ciphertext(const std::vector<std::vector<int64_t>>& observed, const std::vector<int64_t>& corpus,
                                         int64_t vocab_size, const CipherLM* lm, const CiphertextAttackOptions& options) {
  const auto t0 = Clock::now();
  if (vocab_size < 2 || vocab_size > (int64_t{1} << 31)) throw std::invalid_argument("attack_ciphertext: bad vocabulary size");
  auto check = [&](int64_t id, const char* what) {
    if (id < 0 || id >= vocab_size)
      throw std::invalid_argument(fmt::format("attack_ciphertext: {} id {} is outside the vocabulary of {}", what, id, vocab_size));
  };
  for (const auto& seq : observed)
    for (const int64_t id : seq) check(id, "encrypted");
  for (const int64_t id : corpus) check(id, "corpus");
  for (const auto& [p, c] : options.known) {
    check(p, "known plaintext");
    check(c, "known encrypted");
  }
  if (corpus.size() < 2) throw std::invalid_argument("attack_ciphertext: the corpus has fewer than 2 tokens");
  CiphertextAttackResult r;
  r.corpus_tokens = static_cast<int64_t>(corpus.size());
  std::vector<char> distinct(static_cast<std::size_t>(vocab_size), 0);
  for (const auto& seq : observed) {
    r.observed_tokens += static_cast<int64_t>(seq.size());
    for (const int64_t id : seq) distinct[static_cast<std::size_t>(id)] = 1;
  }
  r.observed_distinct = std::count(distinct.begin(), distinct.end(), 1);
  if (lm && lm->vocab_size != vocab_size) throw std::invalid_argument("attack_ciphertext: the model's vocabulary differs");

  // Ciphertext: what was observed, and with a model as much as it will sample.
  std::vector<std::vector<int64_t>> cipher = observed;
  if (lm && lm->sample && lm->bos >= 0 && options.sample_tokens > 0) {
    const auto ts = Clock::now();
    constexpr int64_t kRows = 32;
    for (uint64_t round = 0; r.sampled_tokens < options.sample_tokens && since(ts) < options.sample_seconds; ++round) {
      int64_t length = std::min<int64_t>(256, (options.sample_tokens - r.sampled_tokens + kRows - 1) / kRows);
      if (lm->max_length > 0) length = std::min(length, lm->max_length - 1);
      for (auto& seq : lm->sample(kRows, std::max<int64_t>(1, length), options.seed * 1000003 + round)) {
        r.sampled_tokens += static_cast<int64_t>(seq.size());
        cipher.push_back(std::move(seq));
      }
      if (options.progress)
        options.progress(fmt::format("sampled {} cipher-space tokens from the model ({:.1f} s)", r.sampled_tokens, since(ts)));
    }
    r.model_used = true;
  }
  Search search(cipher, corpus, vocab_size, options);
  if (options.progress)
    options.progress(fmt::format("search over {} ciphertext ids against {} corpus tokens", search.active(), corpus.size()));
  // Alternate big moves (assignment of every id given its neighbours) with swaps.
  {
    const auto ts = Clock::now();
    constexpr int kRounds = 10;
    for (int round = 0; round < kRounds; ++round) {
      const bool small = search.active() <= 2048;  // the assignment is cubic
      if (small) {
        const int64_t changed = search.assign_round();
        if (options.progress) options.progress(fmt::format("assignment round {}: {} guesses changed", round + 1, changed));
      }
      search.anneal(std::max(0.0, options.search_seconds * (round + 1) / kRounds - since(ts)));
    }
  }
  r.guess = search.guess();

  if (lm && lm->log_probs && options.refine_passes > 0 && vocab_size <= options.max_refine_vocab) {
    r.model_used = true;
    std::mt19937_64 rng(options.seed ^ 0x9e3779b97f4a7c15ULL);
    auto g = search.plain_to_cipher();
    const auto tr = Clock::now();
    for (int pass = 0; pass < options.refine_passes && since(tr) < options.refine_seconds; ++pass) {
      const auto tp = Clock::now();
      auto [next, changed] = refine_pass(*lm, corpus, g, options.refine_tokens, rng, options.known);
      g = std::move(next);
      ++r.refine_passes;
      if (options.progress) options.progress(fmt::format("refinement pass {}: {} ids changed ({:.1f} s)", pass + 1, changed, since(tp)));
      if (changed == 0) break;
    }
    r.guess.assign(static_cast<std::size_t>(vocab_size), -1);
    for (int64_t p = 0; p < vocab_size; ++p) r.guess[static_cast<std::size_t>(g[static_cast<std::size_t>(p)])] = p;
  }
  r.seconds = since(t0);
  return r;
}

CiphertextAttackScore score_ciphertext_attack(const std::vector<int64_t>& guess, const std::vector<int64_t>& truth,
                                              const std::vector<std::vector<int64_t>>& observed) {
  if (guess.size() != truth.size()) throw std::invalid_argument("score_ciphertext_attack: guess and truth differ in size");
  const auto v = static_cast<int64_t>(truth.size());
  std::vector<char> right(static_cast<std::size_t>(v), 0);  // by encrypted id
  int64_t vocab_right = 0;
  for (int64_t p = 0; p < v; ++p) {
    const int64_t c = truth[static_cast<std::size_t>(p)];
    if (c < 0 || c >= v) throw std::invalid_argument("score_ciphertext_attack: the truth is not a permutation");
    right[static_cast<std::size_t>(c)] = guess[static_cast<std::size_t>(c)] == p;
    vocab_right += right[static_cast<std::size_t>(c)];
  }
  CiphertextAttackScore s;
  s.vocab_recovered = v == 0 ? 0 : static_cast<double>(vocab_right) / static_cast<double>(v);
  std::vector<char> seen(static_cast<std::size_t>(v), 0);
  int64_t tokens_right = 0, distinct_right = 0;
  for (const auto& seq : observed)
    for (const int64_t c : seq) {
      if (c < 0 || c >= v) throw std::invalid_argument("score_ciphertext_attack: an observed id is outside the vocabulary");
      ++s.observed_tokens;
      tokens_right += right[static_cast<std::size_t>(c)];
      if (!seen[static_cast<std::size_t>(c)]) {
        seen[static_cast<std::size_t>(c)] = 1;
        ++s.observed_distinct;
        distinct_right += right[static_cast<std::size_t>(c)];
      }
    }
  if (s.observed_tokens > 0) s.tokens_recovered = static_cast<double>(tokens_right) / static_cast<double>(s.observed_tokens);
  if (s.observed_distinct > 0)
    s.observed_vocab_recovered = static_cast<double>(distinct_right) / static_cast<double>(s.observed_distinct);
  return s;
}

}  // namespace eesched::ee
