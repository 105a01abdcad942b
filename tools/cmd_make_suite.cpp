// eesched make-suite: a seeded, varied task suite (JSONL) for the sweep.
#include <spdlog/spdlog.h>

#include <sstream>
#include <stdexcept>
#include <tuple>

#include "data/error.h"
#include "data/make_suite.h"
#include "data/suite.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace eesched::tools {
namespace {

struct MakeSuiteArgs {
  std::string out, corpus = "corpus/sotu.txt", models, prompt_tokens = "4-1024", new_tokens = "1-256", id_prefix = "dev";
  uint64_t seed = 1;
  int count = 240, max_batch = 8;
};

// "LO-HI" (or one number) as an inclusive range.
std::pair<int64_t, int64_t> parse_range(const std::string& flag, const std::string& text) {
  const auto dash = text.find('-');
  try {
    std::size_t used = 0;
    const int64_t lo = std::stoll(text.substr(0, dash), &used);
    if (used != text.substr(0, dash).size()) throw std::invalid_argument(text);
    if (dash == std::string::npos) return {lo, lo};
    const std::string rest = text.substr(dash + 1);
    const int64_t hi = std::stoll(rest, &used);
    if (used != rest.size()) throw std::invalid_argument(text);
    return {lo, hi};
  } catch (const std::logic_error&) {
    throw data::Error(flag + " must be LO-HI (e.g. 4-128), not '" + text + "'");
  }
}

// "a,b/DRAFT": equal shares, seeded prompt ids; NAME/DRAFT names a draft for the spec arms.
std::vector<data::SuiteModel> parse_models(const std::string& list) {
  std::vector<data::SuiteModel> out;
  std::istringstream in(list);
  for (std::string item; std::getline(in, item, ',');) {
    if (item.empty()) throw data::Error("--models: an empty model name in '" + list + "'");
    const auto slash = item.find('/');
    out.push_back({item.substr(0, slash), slash == std::string::npos ? "" : item.substr(slash + 1), false, 1.0});
  }
  return out;
}

void run(const MakeSuiteArgs& a) {
  data::MakeSuiteOptions o;
  o.seed = a.seed;
  o.count = a.count;
  o.models = a.models.empty() ? data::default_suite_models() : parse_models(a.models);
  std::tie(o.min_prompt, o.max_prompt) = parse_range("--prompt-tokens", a.prompt_tokens);
  std::tie(o.min_new, o.max_new) = parse_range("--new-tokens", a.new_tokens);
  o.max_batch = a.max_batch;
  o.id_prefix = a.id_prefix;
  std::istringstream in(read_text_file(a.corpus));
  for (std::string line; std::getline(in, line);) o.documents.push_back(line);
  const auto tasks = data::make_suite(o);
  data::write_suite(a.out, tasks);
  spdlog::info("wrote {} tasks to {}", tasks.size(), a.out);
}

}  // namespace

void register_make_suite(CLI::App& app) {
  auto args = std::make_shared<MakeSuiteArgs>();
  auto* cmd = app.add_subcommand("make-suite", "write a seeded, varied task suite (JSONL) with prompts from the corpus");
  cmd->add_option("--out", args->out, "suite file to write")->required();
  cmd->add_option("--corpus", args->corpus, "corpus, one document per line (make corpus)")->capture_default_str()->check(CLI::ExistingFile);
  cmd->add_option("--seed", args->seed, "seed")->capture_default_str();
  cmd->add_option("--count", args->count, "tasks")->capture_default_str()->check(CLI::Range(1, 1000000));
  cmd->add_option("--models", args->models,
                  "comma-separated models in equal shares, NAME or NAME/DRAFT, each given seeded prompt ids (prompt_tokens), "
                  "resolved by the sweep under its --models-dir (default: models/target with its draft and text prompts 40%, "
                  "syn25m 25%, syn110m 20%, syn350m 15%)");
  cmd->add_option("--prompt-tokens", args->prompt_tokens, "prompt tokens LO-HI, drawn log-uniform")->capture_default_str();
  cmd->add_option("--new-tokens", args->new_tokens, "new tokens LO-HI, drawn log-uniform")->capture_default_str();
  cmd->add_option("--max-batch", args->max_batch, "largest batch (batches are 1, 2, 4, 8; larger draws are capped)")
      ->capture_default_str()->check(CLI::Range(1, 1024));
  cmd->add_option("--id-prefix", args->id_prefix, "task ids are PREFIX-0000, PREFIX-0001, ...")->capture_default_str();
  cmd->callback([args] { run(*args); });
}

}  // namespace eesched::tools
