#pragma once
// Where tools/fetch-tokenizers.sh put the real tokenizers: EESCHED_TOKENIZERS_DIR, else the
// checkout's tokenizers/ (the script's default). Header-only and LibTorch-free, for every test.
#include <cstdlib>
#include <filesystem>

namespace eesched::testing {

inline std::filesystem::path tokenizers_dir() {
  if (const char* env = std::getenv("EESCHED_TOKENIZERS_DIR"); env && *env) return env;
  return std::filesystem::path(EESCHED_SOURCE_DIR) / "tokenizers";
}

}  // namespace eesched::testing
