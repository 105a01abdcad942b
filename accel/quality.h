#pragma once
// Measuring the quality of lossy weight transforms (data/quality.h): for each transform key
// ("int8", "prune20", "int8+prune20"), the perplexity of the transformed model on held-out ids
// over the lossless model's, on the same windows, and the fraction of positions whose argmax
// next token is the lossless model's. The model owner runs it on plaintext (the figures are the
// same on the encrypted model with encrypted ids: EE permutes logits, and both are invariant).
// The transformed models are built the way workers build the arms (accel/registry.h), from the
// same model, FFN statistics included, so the figures describe what workers will run.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "data/quality.h"

namespace eesched::runtime {
class LlamaModel;
}

namespace eesched::accel {

// The keys measured by default: those of the arm catalog's lossy arms, plus int8, prune10/20/30
// and int8+prune10/20/30, in a stable order.
std::vector<std::string> default_quality_transforms();

// The table's keys in that order (by pruning level, without int8 first), for printing.
std::vector<std::string> ordered_keys(const data::QualityTable& table);

// "int8,prune20,int8+prune20" -> canonical keys; throws data::Error naming an entry that is
// not a lossy transform (or is listed twice).
std::vector<std::string> parse_quality_transforms(const std::string& list);

struct QualityOptions {
  std::vector<std::string> transforms;  // empty: default_quality_transforms()
  int64_t context = 256;                // perplexity window (stride context / 2)
  std::function<void(const std::string&)> progress;  // one line per model scored
};

// Measures every transform on `heldout` (ids as the model sees them; at least 2). Models that
// share a pruning level are built once. Throws runtime::Error on bad input.
data::QualityTable measure_quality(const runtime::LlamaModel& model, const std::vector<int64_t>& heldout,
                                   const QualityOptions& options);

// DIR/quality.json: a plaintext model directory's measured quality (data::quality_to_json's
// shape). read: nullopt when absent; a malformed file is a runtime::Error naming it.
inline constexpr const char* kQualityFile = "quality.json";
std::optional<data::QualityTable> read_quality_file(const std::filesystem::path& model_dir);
void write_quality_file(const std::filesystem::path& model_dir, const data::QualityTable& table);

}  // namespace eesched::accel
