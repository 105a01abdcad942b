#pragma once
// The ciphertext-only attack (issue 21): the coordinator or a worker keeps the encrypted token
// ids of the requests it saw (prompts and answers) and has public text in the same language;
// a worker may also hold the encrypted model, a language model over encrypted ids it can run.
// The vocabulary permutation is fixed per key, so every token stream under one key is a
// monoalphabetic substitution over token ids, and it falls to the classic tools:
//
//  1. statistics: unigram and bigram counts of the ciphertext (the observed requests, plus,
//     with the encrypted model, as much text as one cares to sample from it) and of the public
//     corpus (a Witten-Bell smoothed bigram model);
//  2. search: start from matching frequency ranks, then simulated annealing over swaps of two
//     ids' guesses, scored by the bigram log-likelihood of the ciphertext under the guess;
//  3. with the encrypted model: refinement. Encrypt stretches of the public corpus with the
//     current guess, let the model predict every next id, and sum, for each plaintext token y,
//     the log-probability the model gives each encrypted id where the corpus holds y next; the
//     best one-to-one assignment of those sums (Hungarian) is the next guess. As the contexts
//     become right the predictions sharpen; a few passes recover every token the corpus uses.
//
// No key is used; the key only scores the guess (score_ciphertext_attack).
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace eesched::runtime {
class LlamaModel;
}

namespace eesched::ee {

// A language model over encrypted ids, as the holder of the encrypted model can run it.
struct CipherLM {
  int64_t vocab_size = 0;
  int64_t bos = -1;  // its BOS id (the encrypted config.json names it), or -1
  int64_t max_length = 0;  // the longest row it takes (0: any)
  // Rows of encrypted ids, all of one length T: the log-probability of every next id at every
  // position, [rows * T * vocab] row-major.
  std::function<std::vector<float>(const std::vector<std::vector<int64_t>>& rows)> log_probs;
  // `rows` sequences of `length` ids sampled from the model after BOS (temperature 1).
  std::function<std::vector<std::vector<int64_t>>(int64_t rows, int64_t length, uint64_t seed)> sample;
};

// The encrypted model as a CipherLM (it must outlive the result).
CipherLM cipher_lm(const runtime::LlamaModel& encrypted);

struct CiphertextAttackOptions {
  double search_seconds = 20;       // simulated annealing budget
  uint64_t seed = 1;
  // With a model:
  int64_t sample_tokens = 8192;     // cipher-space tokens sampled from it (0: none)
  double sample_seconds = 30;       // stop sampling after this long
  int64_t refine_tokens = 16384;    // corpus tokens predicted per refinement pass
  int refine_passes = 12;           // at most (0: no refinement); they stop once the guess holds still
  double refine_seconds = 180;      // no pass starts after this long
  int64_t max_refine_vocab = 8192;  // refinement holds a vocab x vocab table: skipped above this
  // (plaintext id, encrypted id) pairs the attacker knows, e.g. BOS/EOS from the encrypted config.
  std::vector<std::pair<int64_t, int64_t>> known;
  std::function<void(const std::string&)> progress;  // a line per stage, for long runs
};

struct CiphertextAttackResult {
  std::vector<int64_t> guess;       // [vocab]: encrypted id -> guessed plaintext id, -1 unknown
  int64_t observed_tokens = 0;
  int64_t observed_distinct = 0;    // distinct encrypted ids in the observed sequences
  int64_t sampled_tokens = 0;       // sampled from the model
  int64_t corpus_tokens = 0;
  bool model_used = false;          // a model was given and sampled from or refined with
  int refine_passes = 0;            // refinement passes run
  double seconds = 0;
};

// `observed`: encrypted id sequences (each a request's prompt, or prompt and answer joined);
// `corpus`: plaintext ids of the public text; `lm`: a model, or null.
CiphertextAttackResult attack_ciphertext(const std::vector<std::vector<int64_t>>& observed, const std::vector<int64_t>& corpus,
                                         int64_t vocab_size, const CipherLM* lm, const CiphertextAttackOptions& options);

// The guess scored against the truth (`truth[t]`: the encrypted id of plaintext token t, the
// key's vocabulary permutation).
struct CiphertextAttackScore {
  double vocab_recovered = 0;           // of all encrypted ids, the fraction guessed right
  double observed_vocab_recovered = 0;  // of the distinct ids in `observed`, the fraction guessed right
  double tokens_recovered = 0;          // of the tokens of `observed` (frequency weighted), the fraction decrypted right
  int64_t observed_tokens = 0, observed_distinct = 0;
};
CiphertextAttackScore score_ciphertext_attack(const std::vector<int64_t>& guess, const std::vector<int64_t>& truth,
                                              const std::vector<std::vector<int64_t>>& observed);

}  // namespace eesched::ee
