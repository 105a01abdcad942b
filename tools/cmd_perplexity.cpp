// eesched perplexity: held-out perplexity of a model on a text file.
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "runtime/model.h"
#include "runtime/perplexity.h"
#include "runtime/threads.h"
#include "runtime/tokenizer.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace eesched::tools {
namespace {

struct PerplexityArgs {
  std::string model, text, tokenizer;
  int64_t context = 0, stride = 0, max_tokens = 0;
  bool json = false;
  int threads = 0;
};

void run(const PerplexityArgs& a) {
  runtime::set_threads(a.threads);
  const std::filesystem::path dir(a.model);
  auto tokenizer = runtime::Tokenizer::load(a.tokenizer.empty() ? dir / "tokenizer.model" : std::filesystem::path(a.tokenizer));
  auto model = runtime::LlamaModel::load(dir);
  const auto text = read_text_file(a.text);
  auto ids = tokenizer.encode_document(text);
  if (a.max_tokens > 0 && static_cast<int64_t>(ids.size()) > a.max_tokens) ids.resize(static_cast<std::size_t>(a.max_tokens));

  runtime::PerplexityOptions opts;
  opts.context = a.context;
  opts.stride = a.stride;
  const bool tty = isatty(fileno(stderr));
  opts.progress = [tty](int64_t done, int64_t total) {
    if (tty) std::fprintf(stderr, "\rscored %lld / %lld tokens", static_cast<long long>(done), static_cast<long long>(total));
  };
  auto r = runtime::perplexity(model, ids, opts);
  if (tty) std::fprintf(stderr, "\n");
  if (a.json) {
    std::cout << nlohmann::json{{"perplexity", r.perplexity}, {"mean_nll", r.mean_nll}, {"tokens", r.tokens}, {"windows", r.windows}}.dump()
              << std::endl;
  } else {
    std::cout << "perplexity " << r.perplexity << " over " << r.tokens << " tokens (" << r.windows << " windows)" << std::endl;
  }
}

}  // namespace

void register_perplexity(CLI::App& app) {
  auto args = std::make_shared<PerplexityArgs>();
  auto* cmd = app.add_subcommand("perplexity", "perplexity of a model on a text file (sliding window)");
  add_model_option(cmd, args->model, "model directory");
  cmd->add_option("--text", args->text, "text file")->required()->check(CLI::ExistingFile);
  cmd->add_option("--tokenizer", args->tokenizer, "tokenizer.model (default: MODEL/tokenizer.model)")->check(CLI::ExistingFile);
  cmd->add_option("--context", args->context, "window length (default: max_position_embeddings)");
  cmd->add_option("--stride", args->stride, "window step (default: context/2)");
  cmd->add_option("--max-tokens", args->max_tokens, "score only the first N tokens (0 = all)");
  cmd->add_flag("--json", args->json, "print {perplexity, mean_nll, tokens, windows}");
  add_threads_option(cmd, args->threads);
  cmd->callback([args] { run(*args); });
}

}  // namespace eesched::tools
