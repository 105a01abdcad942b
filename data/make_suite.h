#pragma once
// eesched make-suite: a seeded, varied task suite for the sweep. Prompts for models with a
// tokenizer are word spans drawn from the training corpus (one document per line); synthetic
// models (random weights, no tokenizer) get `prompt_tokens` instead, filled with seeded ids by
// the sweep.
#include <cstdint>
#include <string>
#include <vector>

#include "data/task.h"

namespace eesched::data {

struct SuiteModel {
  std::string name;       // as written in the suite, resolved by the sweep under --models-dir
  std::string draft;      // draft for speculative arms, or empty
  bool has_tokenizer = false;
  double weight = 1.0;    // relative share of the tasks
};

struct MakeSuiteOptions {
  uint64_t seed = 1;
  int count = 240;
  std::vector<SuiteModel> models;
  std::vector<std::string> documents;  // corpus lines, for text prompts
  int64_t min_prompt = 4, max_prompt = 1024;  // prompt tokens, log-uniform
  int64_t min_new = 1, max_new = 256;         // new tokens, log-uniform
  int max_batch = 8;                          // batch 1 (60%), 2, 4, 8 (10% each side), capped here
  std::string id_prefix = "dev";              // ids are PREFIX-0000, PREFIX-0001, ...
};

// The default mix: models/target (with its draft) and the synthetic 25m/110m/350m presets.
std::vector<SuiteModel> default_suite_models();

// Deterministic for a seed. Throws data::Error when a tokenizer model needs text and no
// document is long enough.
std::vector<TaskSpec> make_suite(const MakeSuiteOptions& options);

}  // namespace eesched::data
