#include "tools/owner_quality.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>

#include "accel/quality.h"
#include "runtime/ffn_stats.h"
#include "runtime/tokenizer.h"
#include "tools/cli_util.h"

namespace eesched::tools {
namespace {

// The first n ids of a text file, tokenized as a document. Only a prefix is read and tokenized
// (cut at a paragraph break, so the ids are those of the whole file): the calibration corpus is
// 10 MB, and a few thousand tokens are wanted.
std::vector<int64_t> text_ids(const runtime::Tokenizer& tokenizer, const std::filesystem::path& path, int64_t n) {
  const auto text = read_text_file(path);
  for (std::size_t bytes = static_cast<std::size_t>(n) * 8;; bytes *= 2) {
    std::size_t cut = text.size();
    if (bytes < text.size()) {
      const auto brk = text.find("\n\n", bytes);
      if (brk != std::string::npos) cut = brk;
    }
    auto ids = tokenizer.encode_document(text.substr(0, cut));
    if (static_cast<int64_t>(ids.size()) >= n || cut == text.size()) {
      if (static_cast<int64_t>(ids.size()) > n) ids.resize(static_cast<std::size_t>(n));
      return ids;
    }
  }
}

// Ids separated by whitespace or commas.
std::vector<int64_t> file_ids(const std::filesystem::path& path, int64_t n, int64_t vocab) {
  auto text = read_text_file(path);
  for (auto& ch : text)
    if (ch == ',') ch = ' ';
  std::istringstream in(text);
  std::vector<int64_t> ids;
  std::string item;
  while (in >> item && static_cast<int64_t>(ids.size()) < n) {
    std::size_t used = 0;
    int64_t id = -1;
    try {
      id = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || id < 0 || id >= vocab)
      throw std::runtime_error(path.string() + ": '" + item + "' is not a token id of a " + std::to_string(vocab) + "-token vocabulary");
    ids.push_back(id);
  }
  if (ids.size() < 2) throw std::runtime_error(path.string() + ": fewer than 2 token ids");
  return ids;
}

}  // namespace

void add_owner_quality_options(CLI::App* cmd, OwnerQualityArgs& a) {
  cmd->add_option("--heldout", a.heldout, "held-out text the quality is measured on")->capture_default_str()->check(CLI::ExistingFile);
  cmd->add_option("--heldout-ids", a.heldout_ids, "held-out token ids instead (whitespace or comma separated; no tokenizer needed)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--calibration", a.calibration, "calibration text for the FFN activation statistics of pruning (not the held-out text)")
      ->capture_default_str()
      ->check(CLI::ExistingFile);
  cmd->add_option("--calibration-ids", a.calibration_ids, "calibration token ids instead")->check(CLI::ExistingFile);
  cmd->add_option("--tokenizer", a.tokenizer, "tokenizer.json or tokenizer.model (default: the plaintext model's)")->check(CLI::ExistingFile);
  cmd->add_option("--transforms", a.transforms, "lossy transforms to measure, e.g. int8,prune20,int8+prune20 (default: the catalog's and "
                                                "int8, prune10/20/30, int8+prune10/20/30)");
  cmd->add_option("--tokens", a.tokens, "held-out tokens scored")->capture_default_str()->check(CLI::Range(int64_t{16}, int64_t{10000000}));
  cmd->add_option("--calibration-tokens", a.calibration_tokens, "calibration tokens for the FFN statistics")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{16}, int64_t{10000000}));
  cmd->add_option("--context", a.context, "perplexity window (stride: half of it)")->capture_default_str()->check(CLI::Range(int64_t{2}, int64_t{100000}));
  cmd->add_flag("--recalibrate", a.recalibrate, "measure the FFN statistics again even when the model directory has them");
}

OwnerInputs owner_inputs(const std::filesystem::path& plain_dir, const OwnerQualityArgs& a, int64_t vocab_size) {
  OwnerInputs out;
  std::optional<runtime::Tokenizer> tokenizer;
  // A Hugging Face checkpoint carries tokenizer.json, a trained one of ours tokenizer.model.
  const std::filesystem::path tok_path = a.tokenizer.empty() ? plain_dir : std::filesystem::path(a.tokenizer);
  const bool has_tokenizer = a.tokenizer.empty() ? std::filesystem::exists(plain_dir / "tokenizer.json") ||
                                                       std::filesystem::exists(plain_dir / "tokenizer.model")
                                                 : std::filesystem::exists(tok_path);
  auto load_tokenizer = [&]() -> const runtime::Tokenizer& {
    if (!tokenizer) {
      tokenizer = runtime::Tokenizer::load(tok_path);
      if (tokenizer->vocab_size() > vocab_size)
        throw std::runtime_error("the tokenizer " + tok_path.string() + " has " + std::to_string(tokenizer->vocab_size()) +
                                 " pieces, more than the model's " + std::to_string(vocab_size));
    }
    return *tokenizer;
  };
  auto ids = [&](const std::string& ids_file, const std::string& text, int64_t n, std::string& why) -> std::optional<std::vector<int64_t>> {
    if (!ids_file.empty()) return file_ids(ids_file, n, vocab_size);
    if (!std::filesystem::exists(text)) {
      why = "no text at " + text + " (make corpus fetches it)";
      return std::nullopt;
    }
    if (!has_tokenizer) {
      why = plain_dir.string() + " has no tokenizer (tokenizer.json or tokenizer.model) to read " + text + " with (pass --tokenizer, or ids)";
      return std::nullopt;
    }
    auto v = text_ids(load_tokenizer(), text, n);
    if (v.size() < 2) throw std::runtime_error(text + ": fewer than 2 tokens");
    return v;
  };
  out.heldout = ids(a.heldout_ids, a.heldout, a.tokens, out.heldout_why);
  out.calibration = ids(a.calibration_ids, a.calibration, a.calibration_tokens, out.calibration_why);
  if (out.heldout && out.calibration && *out.heldout == *out.calibration)
    spdlog::warn("the calibration ids are the held-out ids: the figures will flatter activation-aware pruning");
  return out;
}

runtime::LlamaModel calibrated(const runtime::LlamaModel& model, const std::optional<std::vector<int64_t>>& calibration,
                               const OwnerQualityArgs& a, bool& measured) {
  measured = false;
  if (model.has_ffn_stats() && !a.recalibrate) {
    spdlog::info("FFN activation statistics: the model directory's {}", runtime::kFfnStatsFile);
    return model;
  }
  if (!calibration) {
    spdlog::warn("no calibration text: pruning scores FFN neurons by weight norms");
    return runtime::with_ffn_stats(model, {});
  }
  const auto start = std::chrono::steady_clock::now();
  runtime::FfnStatsOptions o;
  o.context = a.context;
  auto stats = runtime::measure_ffn_stats(model, *calibration, o);
  measured = true;
  spdlog::info("FFN activation statistics measured on {} calibration tokens in {:.1f} s", calibration->size(),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return runtime::with_ffn_stats(model, stats);
}

data::QualityTable measure_owner_quality(const runtime::LlamaModel& model, const std::vector<int64_t>& heldout,
                                         const OwnerQualityArgs& a) {
  const auto start = std::chrono::steady_clock::now();
  accel::QualityOptions o;
  if (!a.transforms.empty()) o.transforms = accel::parse_quality_transforms(a.transforms);
  o.context = a.context;
  o.progress = [](const std::string& what) { spdlog::info("quality: {}", what); };
  auto table = accel::measure_quality(model, heldout, o);
  spdlog::info("quality of {} lossy transforms measured on {} held-out tokens in {:.1f} s", table.size(), heldout.size(),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return table;
}

std::string quality_summary(const data::QualityTable& table) {
  std::string s;
  for (const auto& key : accel::ordered_keys(table))
    s += fmt::format("{}{} {:.3f} (top-1 {:.2f})", s.empty() ? "" : ", ", key, table.at(key).ppl_ratio, table.at(key).top1_agreement);
  return s.empty() ? "none" : s;
}

}  // namespace eesched::tools
