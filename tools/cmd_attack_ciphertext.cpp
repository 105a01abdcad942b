// eesched attack ciphertext: play the coordinator or a worker that kept the encrypted ids of the
// requests it saw (a store's tasks, or a .jsonl of id sequences), holds public text in the same
// language and perhaps the encrypted model, and measure how much of the vocabulary permutation
// frequency and n-gram analysis recovers (ee/attack_ciphertext.h). The key is read only to score.
//
// eesched attack make-requests: the clients' side of that experiment, for the figures: cut
// held-out text into N prompts, encrypt them, answer each with the encrypted model (when given), and write
// the encrypted ids as the coordinator would keep them.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "data/store.h"
#include "ee/attack_ciphertext.h"
#include "ee/codec.h"
#include "ee/key.h"
#include "ee/manifest.h"
#include "runtime/generate.h"
#include "runtime/model.h"
#include "runtime/threads.h"
#include "runtime/tokenizer.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace eesched::tools {
namespace {

using Sequences = std::vector<std::vector<int64_t>>;

struct AttackCiphertextArgs {
  std::string db, observed, corpus, key, encrypted, tokenizer;
  int64_t requests = 0;
  int64_t corpus_bytes = 2'000'000;
  double search_seconds = 20;
  int64_t sample_tokens = 8192;
  int refine_passes = 12;
  double refine_seconds = 180;
  uint64_t seed = 1;
  int threads = 0;
  bool json = false;
};

// Up to `max_bytes` of a text file, cut at the last line end within them.
std::string read_text(const std::string& path, int64_t max_bytes, const std::string& flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + flag + " " + path);
  std::string s(static_cast<std::size_t>(std::max<int64_t>(0, max_bytes)), '\0');
  in.read(s.data(), static_cast<std::streamsize>(s.size()));
  s.resize(static_cast<std::size_t>(in.gcount()));
  if (!in.eof()) {
    const auto nl = s.rfind('\n');
    if (nl != std::string::npos) s.resize(nl + 1);
  }
  return s;
}

// The text as documents (runtime::Tokenizer::encode_document), encoded in blocks cut at blank
// lines so that long texts show progress.
std::vector<int64_t> encode_text(const runtime::Tokenizer& tok, const std::string& text, const std::string& what) {
  std::vector<int64_t> ids;
  constexpr std::size_t kBlock = 64 * 1024;
  std::size_t pos = 0, last_report = 0;
  while (pos < text.size()) {
    std::size_t end = std::min(text.size(), pos + kBlock);
    if (end < text.size()) {
      const auto cut = text.find("\n\n", end);
      end = cut == std::string::npos ? text.size() : cut + 2;
    }
    const auto part = tok.encode_document(text.substr(pos, end - pos));
    ids.insert(ids.end(), part.begin(), part.end());
    pos = end;
    if (pos - last_report >= 1'000'000 || (pos == text.size() && pos > kBlock)) {
      spdlog::info("tokenized {:.1f} of {:.1f} MB of {} ({} tokens)", static_cast<double>(pos) / 1e6,
                   static_cast<double>(text.size()) / 1e6, what, ids.size());
      last_report = pos;
    }
  }
  return ids;
}

// One observed line: a JSON array of ids, {"ids": [...]}, or {"prompt_ids": [...], "answer_ids": [...]}
// (joined, as a request and its answer are one stream).
std::vector<int64_t> parse_observed(const std::string& line) {
  const auto j = nlohmann::json::parse(line);
  if (j.is_array()) return j.get<std::vector<int64_t>>();
  if (!j.is_object()) throw std::runtime_error("not an array or object");
  if (j.contains("ids")) return j.at("ids").get<std::vector<int64_t>>();
  if (!j.contains("prompt_ids")) throw std::runtime_error("no \"ids\" or \"prompt_ids\"");
  auto ids = j.at("prompt_ids").get<std::vector<int64_t>>();
  if (j.contains("answer_ids")) {
    const auto a = j.at("answer_ids").get<std::vector<int64_t>>();
    ids.insert(ids.end(), a.begin(), a.end());
  }
  return ids;
}

Sequences read_observed(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read --observed " + path);
  Sequences out;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      out.push_back(parse_observed(line));
    } catch (const std::exception& e) {
      throw std::runtime_error(fmt::format("--observed {} line {}: not a JSON id array or {{\"ids\": [...]}} ({})", path, n,
                                           std::string(e.what()).substr(0, 80)));
    }
  }
  if (out.empty()) throw std::runtime_error("--observed " + path + " holds no id sequences");
  return out;
}

// The store's tasks, oldest first: each batch row's encrypted prompt ids, followed by the
// encrypted answer ids when the task finished.
Sequences read_store(const std::string& path) {
  if (!std::filesystem::is_regular_file(path)) throw std::runtime_error("--db " + path + ": no such store");
  auto store = data::Store::open(path);
  std::vector<data::TaskRow> tasks;
  for (const auto status : {data::TaskStatus::Pending, data::TaskStatus::Running, data::TaskStatus::Done,
                            data::TaskStatus::Failed, data::TaskStatus::Cancelled}) {
    auto some = store.tasks_with_status(status);
    tasks.insert(tasks.end(), std::make_move_iterator(some.begin()), std::make_move_iterator(some.end()));
  }
  std::sort(tasks.begin(), tasks.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  Sequences out;
  for (const auto& t : tasks)
    for (std::size_t r = 0; r < t.prompt_ids.size(); ++r) {
      auto ids = t.prompt_ids[r];
      if (r < t.outcome.tokens.size()) ids.insert(ids.end(), t.outcome.tokens[r].begin(), t.outcome.tokens[r].end());
      if (!ids.empty()) out.push_back(std::move(ids));
    }
  if (out.empty()) throw std::runtime_error("--db " + path + " holds no tasks with encrypted ids");
  return out;
}

void run_ciphertext(const AttackCiphertextArgs& a) {
  if (a.db.empty() && a.observed.empty()) throw std::runtime_error("give --db STORE or --observed FILE.jsonl (or both)");
  if (a.corpus_bytes < 1) throw std::runtime_error("--corpus-bytes must be positive");
  runtime::set_threads(a.threads);
  // What the attacker sees: the encrypted ids of the first N requests.
  Sequences observed;
  if (!a.db.empty()) observed = read_store(a.db);
  if (!a.observed.empty()) {
    auto more = read_observed(a.observed);
    observed.insert(observed.end(), std::make_move_iterator(more.begin()), std::make_move_iterator(more.end()));
  }
  if (a.requests > 0 && static_cast<int64_t>(observed.size()) > a.requests) observed.resize(static_cast<std::size_t>(a.requests));

  std::optional<runtime::LlamaModel> model;
  if (!a.encrypted.empty()) {
    if (!ee::Manifest::read(a.encrypted)) throw std::runtime_error("--encrypted " + a.encrypted + " is not an encrypted model directory (no ee.json)");
    model.emplace(runtime::LlamaModel::load(a.encrypted));
  }
  const auto tok = runtime::Tokenizer::load(a.tokenizer);
  const int64_t vocab = model ? model->config().vocab_size : tok.vocab_size();
  for (const auto& seq : observed)
    for (const int64_t id : seq)
      if (id < 0 || id >= vocab)
        throw std::runtime_error(fmt::format("observed id {} is outside the vocabulary of {} tokens", id, vocab));
  const auto corpus = encode_text(tok, read_text(a.corpus, a.corpus_bytes, "--corpus"), a.corpus);
  if (corpus.size() < 2) throw std::runtime_error("--corpus " + a.corpus + " holds too little text");
  for (const int64_t id : corpus)
    if (id >= vocab) throw std::runtime_error("the tokenizer's ids exceed the model's vocabulary: is it the right --tokenizer?");

  ee::CiphertextAttackOptions o;
  o.search_seconds = a.search_seconds;
  o.seed = a.seed;
  o.sample_tokens = a.sample_tokens;
  o.refine_passes = a.refine_passes;
  o.refine_seconds = a.refine_seconds;
  o.progress = [](const std::string& line) { spdlog::info("{}", line); };
  std::optional<ee::CipherLM> lm;
  if (model) {
    lm = ee::cipher_lm(*model);
    // BOS and EOS: public in plaintext (the tokenizer) and in the encrypted config.
    const auto& c = model->config();
    if (tok.bos_id() >= 0 && c.bos_token_id >= 0) o.known.emplace_back(tok.bos_id(), c.bos_token_id);
    if (tok.eos_id() >= 0 && c.eos_token_id >= 0 && tok.eos_id() != tok.bos_id() && c.eos_token_id != c.bos_token_id)
      o.known.emplace_back(tok.eos_id(), c.eos_token_id);
  }
  spdlog::info("ciphertext attack: {} requests, {} corpus tokens, vocabulary {}{}", observed.size(), corpus.size(), vocab,
               model ? ", with the encrypted model" : "");
  const auto result = ee::attack_ciphertext(observed, corpus, vocab, lm ? &*lm : nullptr, o);

  // Scoring: the key's vocabulary permutation (ee::derive_secrets: key.permutation("vocab")).
  const auto key = ee::Key::load(a.key);
  if (model) ee::Manifest::read(a.encrypted)->check_key(key);
  if (key.vocab_size() != vocab)
    throw std::runtime_error(fmt::format("--key {} is for a vocabulary of {} tokens, not {}", a.key, key.vocab_size(), vocab));
  const auto score = ee::score_ciphertext_attack(result.guess, key.permutation("vocab", vocab), observed);
  if (a.json) {
    std::cout << nlohmann::json{{"attack", "ciphertext"},
                                {"requests", observed.size()},
                                {"observed_tokens", score.observed_tokens},
                                {"observed_distinct", score.observed_distinct},
                                {"vocab", vocab},
                                {"vocab_recovered", score.vocab_recovered},
                                {"observed_vocab_recovered", score.observed_vocab_recovered},
                                {"tokens_recovered", score.tokens_recovered},
                                {"model_used", result.model_used},
                                {"sampled_tokens", result.sampled_tokens},
                                {"refine_passes", result.refine_passes},
                                {"corpus_tokens", result.corpus_tokens},
                                {"seconds", result.seconds}}
                     .dump()
              << std::endl;
    return;
  }
  std::cout << fmt::format("ciphertext attack on {} requests ({} tokens, {} distinct ids){} ({:.1f} s, no key used):\n",
                           observed.size(), score.observed_tokens, score.observed_distinct,
                           model ? fmt::format(", with the encrypted model ({} sampled tokens, {} refinement passes)",
                                               result.sampled_tokens, result.refine_passes)
                                 : std::string(),
                           result.seconds)
            << fmt::format("  tokens recovered           {:6.2f}% of the observed tokens\n", 100 * score.tokens_recovered)
            << fmt::format("  observed ids recovered     {:6.2f}% of {} distinct ids\n", 100 * score.observed_vocab_recovered,
                           score.observed_distinct)
            << fmt::format("  vocabulary recovered       {:6.2f}% of {} ids\n", 100 * score.vocab_recovered, vocab);
}

struct MakeRequestsArgs {
  std::string encrypted, key, text, tokenizer, out;
  int64_t requests = 100, prompt_tokens = 48, max_new_tokens = 32, text_bytes = 4'000'000, batch = 32;
  double temperature = 0.8;
  uint64_t seed = 1;
  int threads = 0;
};

void run_make_requests(const MakeRequestsArgs& a) {
  if (a.requests < 1 || a.prompt_tokens < 1 || a.max_new_tokens < 0 || a.batch < 1)
    throw std::runtime_error("--requests, --prompt-tokens and --batch must be positive");
  runtime::set_threads(a.threads);
  const auto key = ee::Key::load(a.key);
  const ee::Codec codec(key);
  const auto tok = runtime::Tokenizer::load(a.tokenizer);
  if (tok.vocab_size() > key.vocab_size())
    throw std::runtime_error(fmt::format("--key {} is for {} tokens, the tokenizer has {}", a.key, key.vocab_size(), tok.vocab_size()));
  std::optional<runtime::LlamaModel> model;
  if (!a.encrypted.empty()) {
    if (!ee::Manifest::read(a.encrypted)) throw std::runtime_error("--encrypted " + a.encrypted + " is not an encrypted model directory (no ee.json)");
    ee::Manifest::read(a.encrypted)->check_key(key);
    model.emplace(runtime::LlamaModel::load(a.encrypted));
  }
  // The prompts: evenly spaced pieces of the held-out text, each started with BOS.
  auto ids = encode_text(tok, read_text(a.text, a.text_bytes, "--text"), a.text);
  if (tok.bos_id() >= 0) ids.erase(std::remove(ids.begin(), ids.end(), tok.bos_id()), ids.end());
  if (static_cast<int64_t>(ids.size()) < a.requests * a.prompt_tokens)
    throw std::runtime_error(fmt::format("--text {} gives {} tokens, fewer than {} requests x {} prompt tokens", a.text, ids.size(),
                                         a.requests, a.prompt_tokens));
  std::ofstream out(a.out);
  if (!out) throw std::runtime_error("cannot write --out " + a.out);
  const int64_t stride = static_cast<int64_t>(ids.size()) / a.requests;
  int64_t written = 0, answer_tokens = 0;
  for (int64_t r0 = 0; r0 < a.requests; r0 += a.batch) {
    Sequences prompts;
    for (int64_t r = r0; r < std::min(a.requests, r0 + a.batch); ++r) {
      std::vector<int64_t> p;
      if (tok.bos_id() >= 0) p.push_back(tok.bos_id());
      p.insert(p.end(), ids.begin() + r * stride, ids.begin() + r * stride + a.prompt_tokens);
      prompts.push_back(codec.encrypt(p));
    }
    runtime::GenerateOptions o;
    o.generation.max_new_tokens = a.max_new_tokens;
    o.generation.temperature = a.temperature;
    o.generation.seed = a.seed + static_cast<uint64_t>(r0);
    if (tok.eos_id() >= 0) o.generation.stop_ids = {codec.encrypt(tok.eos_id())};
    Sequences answers(prompts.size());
    if (model && a.max_new_tokens > 0) answers = runtime::generate(*model, prompts, o).tokens;
    for (std::size_t b = 0; b < prompts.size(); ++b) {
      out << nlohmann::json{{"prompt_ids", prompts[b]}, {"answer_ids", answers[b]}}.dump() << '\n';
      answer_tokens += static_cast<int64_t>(answers[b].size());
      ++written;
    }
    spdlog::info("{} of {} requests answered", written, a.requests);
  }
  std::cout << fmt::format("wrote {} requests ({} prompt tokens, {} answer tokens, encrypted) to {}\n", written,
                           written * (a.prompt_tokens + 1), answer_tokens, a.out);
}

}  // namespace

void register_attack_ciphertext(CLI::App* attack) {
  auto args = std::make_shared<AttackCiphertextArgs>();
  auto* c = attack->add_subcommand("ciphertext",
                                   "the coordinator or a worker with the encrypted ids of N requests and public text (and perhaps the "
                                   "encrypted model): frequency and bigram analysis refined by search recovers the vocabulary "
                                   "permutation (the key only scores it)");
  c->add_option("--db", args->db, "a store whose tasks hold the observed encrypted ids (prompts and answers), oldest first");
  c->add_option("--observed", args->observed,
                "observed encrypted ids, one JSON per line: [ids], {\"ids\": [...]} or {\"prompt_ids\": [...], \"answer_ids\": [...]}");
  c->add_option("--corpus", args->corpus, "public text in the same language")->required()->check(CLI::ExistingFile);
  c->add_option("--corpus-bytes", args->corpus_bytes, "read at most this much of --corpus")->capture_default_str();
  c->add_option("--key", args->key, "the key, to score the attack")->required()->check(CLI::ExistingFile);
  c->add_option("--encrypted", args->encrypted, "the encrypted model: sample cipher-space text from it and refine with its predictions")
      ->check(CLI::ExistingDirectory);
  c->add_option("--tokenizer", args->tokenizer, "the public tokenizer of the model (tokenizer.json / tokenizer.model / its directory)")
      ->required();
  c->add_option("--requests", args->requests, "use the first N observed requests (0: all)")->capture_default_str();
  c->add_option("--search-seconds", args->search_seconds, "simulated annealing budget")->capture_default_str();
  c->add_option("--sample-tokens", args->sample_tokens, "with --encrypted: cipher-space tokens to sample from it")->capture_default_str();
  c->add_option("--refine-passes", args->refine_passes, "with --encrypted: refinement passes over the corpus, at most")
      ->capture_default_str();
  c->add_option("--refine-seconds", args->refine_seconds, "with --encrypted: no refinement pass starts after this long")
      ->capture_default_str();
  c->add_option("--seed", args->seed, "search seed")->capture_default_str();
  add_threads_option(c, args->threads);
  c->add_flag("--json", args->json,
              "print {\"vocab_recovered\", \"tokens_recovered\", \"observed_vocab_recovered\", \"requests\", \"observed_tokens\", "
              "\"model_used\", \"seconds\", ...}");
  c->callback([args] { run_ciphertext(*args); });

  auto m = std::make_shared<MakeRequestsArgs>();
  auto* r = attack->add_subcommand("make-requests",
                                   "for the ciphertext attack's figures: N clients' requests from held-out text, encrypted with the key "
                                   "and answered by the encrypted model (when given), written as the encrypted ids a coordinator keeps (.jsonl)");
  r->add_option("--encrypted", m->encrypted, "encrypted model directory that answers (without: prompts only, no answers)")
      ->check(CLI::ExistingDirectory);
  r->add_option("--key", m->key, "the clients' key")->required()->check(CLI::ExistingFile);
  r->add_option("--tokenizer", m->tokenizer, "the plaintext model's tokenizer")->required();
  r->add_option("--text", m->text, "held-out text the prompts are cut from")->required()->check(CLI::ExistingFile);
  r->add_option("--text-bytes", m->text_bytes, "read at most this much of --text")->capture_default_str();
  r->add_option("--out", m->out, "the .jsonl to write: {\"prompt_ids\": [...], \"answer_ids\": [...]} per request")->required();
  r->add_option("--requests", m->requests, "how many requests")->capture_default_str();
  r->add_option("--prompt-tokens", m->prompt_tokens, "prompt length (after BOS)")->capture_default_str();
  r->add_option("--max-new-tokens", m->max_new_tokens, "answer length at most")->capture_default_str();
  r->add_option("--temperature", m->temperature, "sampling temperature of the answers (0: greedy)")->capture_default_str();
  r->add_option("--batch", m->batch, "requests answered together")->capture_default_str();
  r->add_option("--seed", m->seed, "sampling seed")->capture_default_str();
  add_threads_option(r, m->threads);
  r->callback([m] { run_make_requests(*m); });
}

}  // namespace eesched::tools
