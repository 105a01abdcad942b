#pragma once
// What the model owner measures on a plaintext model before shipping it, shared by
// `measure-quality` and `encrypt-model`: FFN activation statistics on calibration text (for
// activation-aware pruning) and the quality of lossy transforms on held-out text. Calibration and
// held-out text are different files (by default corpus/sotu.txt and corpus/moby-dick.txt), so the
// figures are not measured on the text the pruning was fitted to.
#include <CLI/CLI.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "data/quality.h"
#include "runtime/model.h"

namespace eesched::tools {

struct OwnerQualityArgs {
  std::string heldout = "corpus/moby-dick.txt", heldout_ids;
  std::string calibration = "corpus/sotu.txt", calibration_ids;
  std::string tokenizer;       // default: the plaintext model directory's tokenizer.model
  std::string transforms;      // empty: accel::default_quality_transforms()
  int64_t tokens = 4096;       // held-out tokens scored
  int64_t calibration_tokens = 8192;
  int64_t context = 256;       // perplexity and calibration window
  bool recalibrate = false;    // measure FFN statistics even when the directory has them
};

// --heldout, --heldout-ids, --calibration, --calibration-ids, --tokenizer, --transforms, --tokens,
// --calibration-tokens, --context, --recalibrate.
void add_owner_quality_options(CLI::App* cmd, OwnerQualityArgs& args);

// Held-out and calibration ids for a plaintext model directory. Text needs a tokenizer (--tokenizer
// or PLAIN_DIR/tokenizer.model); ids files do not. nullopt (with the reason in `why`) when the
// default text or a tokenizer is missing; a file the user named that cannot be read is an error.
struct OwnerInputs {
  std::optional<std::vector<int64_t>> heldout, calibration;
  std::string heldout_why, calibration_why;
};
OwnerInputs owner_inputs(const std::filesystem::path& plain_dir, const OwnerQualityArgs& args, int64_t vocab_size);

// The model with FFN statistics: its own (loaded from prune_stats.safetensors) unless
// args.recalibrate, else measured on `calibration` when given, else none (pruning falls back to
// weight norms). `measured` tells whether they were measured here.
runtime::LlamaModel calibrated(const runtime::LlamaModel& model, const std::optional<std::vector<int64_t>>& calibration,
                               const OwnerQualityArgs& args, bool& measured);

// Quality of args.transforms (or the default set) on the held-out ids, progress logged.
data::QualityTable measure_owner_quality(const runtime::LlamaModel& model, const std::vector<int64_t>& heldout,
                                         const OwnerQualityArgs& args);

// One line: "int8 1.004 (top-1 0.97), prune30 1.12 (0.80), ...".
std::string quality_summary(const data::QualityTable& table);

}  // namespace eesched::tools
