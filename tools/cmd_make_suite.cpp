// eesched make-suite: a seeded, varied task suite (JSONL) for the sweep.
#include <spdlog/spdlog.h>

#include <sstream>

#include "data/make_suite.h"
#include "data/suite.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace eesched::tools {
namespace {

struct MakeSuiteArgs {
  std::string out, corpus = "corpus/sotu.txt";
  uint64_t seed = 1;
  int count = 240;
};

void run(const MakeSuiteArgs& a) {
  data::MakeSuiteOptions o;
  o.seed = a.seed;
  o.count = a.count;
  o.models = data::default_suite_models();
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
  cmd->callback([args] { run(*args); });
}

}  // namespace eesched::tools
