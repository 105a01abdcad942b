// eesched logits: the full next-token logits at every position, for checking the runtime
// against independent implementations.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <iostream>

#include <nlohmann/json.hpp>

#include "runtime/model.h"
#include "runtime/threads.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace eesched::tools {
namespace {

struct LogitsArgs {
  std::string model, ids;
  bool json = false;
  int threads = 0;
};

void run(const LogitsArgs& a) {
  runtime::set_threads(a.threads);
  auto model = runtime::LlamaModel::load(a.model);
  const auto ids = parse_id_list(a.ids);
  for (auto id : ids)
    if (id < 0 || id >= model.config().vocab_size)
      throw std::runtime_error("token id " + std::to_string(id) + " outside the vocabulary of " + std::to_string(model.config().vocab_size));
  if (static_cast<int64_t>(ids.size()) > model.config().max_position_embeddings)
    throw std::runtime_error("more ids than max_position_embeddings");
  c10::InferenceMode guard;
  auto logits = model.forward(at::tensor(ids, at::kLong).view({1, -1}))[0].contiguous();
  const int64_t T = logits.size(0), V = logits.size(1);
  const float* data = logits.data_ptr<float>();
  nlohmann::json rows = nlohmann::json::array();
  for (int64_t t = 0; t < T; ++t) rows.push_back(std::vector<float>(data + t * V, data + (t + 1) * V));
  if (a.json) {
    std::cout << nlohmann::json{{"logits", rows}}.dump() << std::endl;
  } else {
    for (int64_t t = 0; t < T; ++t) {
      const float* row = data + t * V;
      int64_t best = 0;
      for (int64_t v = 1; v < V; ++v) if (row[v] > row[best]) best = v;
      std::cout << "position " << t << ": argmax " << best << " (" << row[best] << ")\n";
    }
  }
}

}  // namespace

void register_logits(CLI::App& app) {
  auto args = std::make_shared<LogitsArgs>();
  auto* cmd = app.add_subcommand("logits", "print the logits at every position for a list of token ids");
  add_model_option(cmd, args->model, "model directory");
  cmd->add_option("--ids", args->ids, "comma-separated token ids, e.g. 1,2,3")->required();
  cmd->add_flag("--json", args->json, "print {\"logits\": [[...], ...]}: one row per position, the full vocabulary");
  add_threads_option(cmd, args->threads);
  cmd->callback([args] { run(*args); });
}

}  // namespace eesched::tools
