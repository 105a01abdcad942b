// eesched train-lm: train a Llama language model (and, if needed, its SentencePiece tokenizer).
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "runtime/error.h"
#include "runtime/threads.h"
#include "runtime/tokenizer.h"
#include "runtime/train.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace eesched::tools {
namespace {

struct TrainLmArgs {
  std::string config, corpus, out, tokenizer;
  int64_t vocab_size = 0;
  int64_t steps = 0;
  double max_minutes = 0;
  int threads = 0;
  bool resume = false;
  double val_fraction = 0.01;
};

// One document per line: each becomes [BOS] + its pieces.
std::vector<int64_t> tokenize_corpus(const runtime::Tokenizer& tok, const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read corpus " + path);
  std::vector<int64_t> ids;
  std::string line;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto piece = tok.encode(line, /*add_bos=*/true);
    ids.insert(ids.end(), piece.begin(), piece.end());
  }
  return ids;
}

void run(const TrainLmArgs& a) {
  auto options = runtime::load_train_config(a.config);
  if (a.steps > 0) options.steps = a.steps;
  if (a.max_minutes > 0) options.max_minutes = a.max_minutes;
  options.threads = runtime::set_threads(a.threads);
  const std::filesystem::path out(a.out);
  std::filesystem::create_directories(out);
  const auto tok_path = out / "tokenizer.model";

  if (!a.tokenizer.empty()) {
    if (std::filesystem::absolute(a.tokenizer) != std::filesystem::absolute(tok_path))
      std::filesystem::copy_file(a.tokenizer, tok_path, std::filesystem::copy_options::overwrite_existing);
  } else if (!(a.resume && std::filesystem::exists(tok_path))) {
    runtime::TokenizerTrainOptions to;
    to.vocab_size = a.vocab_size > 0 ? a.vocab_size : options.model.vocab_size;
    to.threads = options.threads;
    spdlog::info("training a {}-piece SentencePiece tokenizer on {}", to.vocab_size, a.corpus);
    runtime::train_tokenizer(a.corpus, out / "tokenizer", to);
    std::filesystem::remove(out / "tokenizer.vocab");
  }
  auto tok = runtime::Tokenizer::load(tok_path);
  if (tok.vocab_size() != options.model.vocab_size)
    throw std::runtime_error(fmt::format("tokenizer has {} pieces but the model config says vocab_size {}", tok.vocab_size(),
                                         options.model.vocab_size));
  options.model.bos_token_id = tok.bos_id();
  options.model.eos_token_id = tok.eos_id();

  const auto t0 = std::chrono::steady_clock::now();
  auto ids = tokenize_corpus(tok, a.corpus);
  const auto n_val = static_cast<std::size_t>(static_cast<double>(ids.size()) * a.val_fraction);
  std::vector<int64_t> val(ids.end() - static_cast<std::ptrdiff_t>(n_val), ids.end());
  ids.resize(ids.size() - n_val);
  spdlog::info("corpus: {} training tokens, {} validation tokens ({:.1f} s to tokenize)", human_count(static_cast<double>(ids.size())),
               human_count(static_cast<double>(n_val)),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  spdlog::info("model: {} parameters, {} layers, hidden {}, heads {}/{} (q/kv); {} steps of {}x{} tokens on {} threads ({})",
               human_count(static_cast<double>(options.model.parameter_count())), options.model.num_hidden_layers,
               options.model.hidden_size, options.model.num_attention_heads, options.model.num_key_value_heads,
               options.steps, options.batch_size, options.seq_len, options.threads, runtime::blas_backend());

  auto summary = runtime::train_lm(options, ids, val, out, a.resume, [](const runtime::TrainProgress& p) {
    const bool tty = isatty(fileno(stderr));
    const auto eta = static_cast<long long>(std::llround(p.eta_s));
    std::string line = fmt::format("step {}/{}  loss {:.4f}  lr {:.2e}  {:.0f} tok/s  ETA {}m{:02}s", p.step, p.steps, p.loss,
                                   p.lr, p.tokens_per_s, eta / 60, eta % 60);
    if (p.val_loss >= 0) {
      std::fprintf(stderr, "%s%s  val_loss %.4f\n", tty ? "\r" : "", line.c_str(), p.val_loss);
    } else if (tty) {
      std::fprintf(stderr, "\r%s", line.c_str());
    } else if (p.step % 10 == 0) {
      std::fprintf(stderr, "%s\n", line.c_str());
    }
    std::fflush(stderr);
  });
  nlohmann::json j = {{"steps", summary.steps},
                      {"tokens", summary.tokens},
                      {"wall_s", summary.wall_s},
                      {"final_train_loss", summary.final_loss},
                      {"val_loss", summary.val_loss},
                      {"resumed", summary.resumed},
                      {"threads", options.threads},
                      {"parameters", options.model.parameter_count()},
                      {"seq_len", options.seq_len},
                      {"batch_size", options.batch_size}};
  std::ofstream(out / "training.json") << j.dump(2) << "\n";
  spdlog::info("trained {} steps ({} tokens) in {:.0f} s; validation loss {:.4f}; wrote {}", summary.steps,
               human_count(static_cast<double>(summary.tokens)), summary.wall_s, summary.val_loss, out.string());
}

}  // namespace

void register_train_lm(CLI::App& app) {
  auto args = std::make_shared<TrainLmArgs>();
  auto* cmd = app.add_subcommand("train-lm", "train a Llama language model (and its tokenizer) on a text corpus");
  cmd->add_option("--config", args->config, "training config JSON: {\"model\": {HF LlamaConfig}, \"train\": {...}}")
      ->required()->check(CLI::ExistingFile);
  cmd->add_option("--corpus", args->corpus, "training text, one document per line")->required()->check(CLI::ExistingFile);
  cmd->add_option("--out", args->out, "output model directory")->required();
  cmd->add_option("--tokenizer", args->tokenizer, "use this SentencePiece model instead of training one")->check(CLI::ExistingFile);
  cmd->add_option("--vocab-size", args->vocab_size, "pieces of a newly trained tokenizer (default: the config's vocab_size)");
  cmd->add_option("--steps", args->steps, "override the config's number of steps");
  cmd->add_option("--max-minutes", args->max_minutes, "stop and save after this much wall time");
  cmd->add_option("--val-fraction", args->val_fraction, "tail of the corpus held out for validation loss")
      ->capture_default_str()->check(CLI::Range(0.001, 0.5));
  cmd->add_flag("--resume", args->resume, "continue from OUT/checkpoint if it exists");
  add_threads_option(cmd, args->threads);
  cmd->callback([args] { run(*args); });
}

}  // namespace eesched::tools
