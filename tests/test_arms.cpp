// data/: arms as an open set. The golden check pins, bit for bit, what every arm means to the
// selector (compute_features), to the roofline and to the model-free rules (lossless, needs a
// draft, quality key, refusals), so that changing how arms are described cannot move a shipped
// selector's inputs (models/selector.json was trained on these vectors).
//
// tests/golden/arm_effects.txt was written by this test, with
//   EESCHED_UPDATE_GOLDEN=1 build/tests/test_arms --gtest_filter='ArmGolden.*'
// before the arm grammar became a descriptor table (data/arm_components.h); regenerate it only
// for a deliberate change of the features (which means a new feature schema version).
#include <gtest/gtest.h>

#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "data/arm.h"
#include "data/error.h"
#include "data/features.h"
#include "data/quality.h"
#include "data/roofline.h"

namespace eesched::data {
namespace {

const char* kGolden = EESCHED_SOURCE_DIR "/tests/golden/arm_effects.txt";

// The arms pinned: the catalog and combinations of every component, at the ends of each range.
std::vector<std::string> golden_arms() {
  std::vector<std::string> out;
  for (const auto& a : arm_catalog()) out.push_back(a.name);
  for (const char* extra : {"kv+int8+prune20", "kv+prune10+spec2", "kv+qspec4", "kv+prune30+qspec4", "kv+int8+prune30+spec4",
                            "kv+prune5+spec1", "kv+prune90+qspec16", "kv+spec16", "kv+int8+spec1", "kv+qspec1", "kv+prune20",
                            "kv+int8+prune90", "kv+prune10", "kv+int8+prune10+spec8"})
    out.push_back(extra);
  return out;
}

std::string bits(double x) {
  uint64_t u = 0;
  std::memcpy(&u, &x, sizeof u);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, u);
  return buf;
}

// FNV-1a, 64 bits, as hex.
std::string fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, h);
  return buf;
}

std::string golden_text() {
  std::ostringstream out;
  // Two models: a GQA model (the features test's) and an MHA one with 2-byte weights.
  ModelRow gqa, mha, draft;
  gqa.layers = 12, gqa.hidden = 768, gqa.intermediate = 2304, gqa.heads = 12, gqa.kv_heads = 4;
  gqa.vocab = 32000, gqa.parameters = 107'000'000, gqa.weight_bytes = 428'000'000, gqa.encrypted = true;
  mha.layers = 24, mha.hidden = 1024, mha.intermediate = 2816, mha.heads = 16, mha.kv_heads = 0;
  mha.vocab = 8192, mha.parameters = 350'000'000, mha.weight_bytes = 700'000'000;
  draft.layers = 2, draft.hidden = 256, draft.intermediate = 688, draft.heads = 4, draft.kv_heads = 4, draft.vocab = 32000;
  draft.parameters = 300'000, draft.weight_bytes = 1'200'000;
  HardwareProfile slow, fast;
  slow.threads = 2, slow.gflops = 50, slow.copy_gbps = 25, slow.mem_free_bytes = 8'000'000'000;
  fast.threads = 16, fast.gflops = 900, fast.copy_gbps = 120, fast.mem_free_bytes = 64'000'000'000;

  std::vector<TaskSpec> tasks(4);
  tasks[0].prompt_tokens = 100, tasks[0].max_new_tokens = 32, tasks[0].temperature = 0.7, tasks[0].top_p = 0.9;
  tasks[0].quality = Quality::Tolerant;
  tasks[1].prompt_tokens = 1024, tasks[1].max_new_tokens = 4, tasks[1].batch = 4, tasks[1].quality = Quality::Exact;
  tasks[1].draft = "d";
  tasks[2].prompt_tokens = 4, tasks[2].max_new_tokens = 256, tasks[2].quality = Quality::Tolerant, tasks[2].draft = "d";
  tasks[3].prompt_tokens = 0, tasks[3].max_new_tokens = 1, tasks[3].batch = 8, tasks[3].quality = Quality::Tolerant;

  const std::vector<Landmarks> landmarks = {{}, {0.6, std::nullopt}, {std::nullopt, 0.85}, {0.3, 0.97}, {1.0, 0.0}};
  for (const auto& name : golden_arms()) {
    const auto arm = parse_arm(name);
    out << "arm " << name << " canonical=" << arm.name << " components=";
    for (const auto& c : arm.components()) out << c << ";";
    out << " kv=" << arm.kv_cache << " lossless=" << arm.lossless() << " needs_draft=" << arm.needs_draft()
        << " quality_key=" << quality_key(arm) << "\n";
    for (std::size_t ti = 0; ti < tasks.size(); ++ti) {
      const auto why = arm_refusal(arm, tasks[ti]);
      out << "  refusal task" << ti << ": " << (why ? *why : "-") << "\n";
    }
    int m = 0;
    for (const ModelRow* model : {static_cast<const ModelRow*>(&gqa), static_cast<const ModelRow*>(&mha)}) {
      int h = 0;
      for (const HardwareProfile* hw : {static_cast<const HardwareProfile*>(&slow), static_cast<const HardwareProfile*>(&fast)}) {
        for (std::size_t ti = 0; ti < tasks.size(); ++ti) {
          for (const ModelRow* d : {static_cast<const ModelRow*>(nullptr), static_cast<const ModelRow*>(&draft)}) {
            // Every feature vector and roofline estimate of this case, bit for bit, hashed to
            // keep the file small; the line says which case moved.
            std::string detail;
            for (const auto& lm : landmarks) {
              FeatureInputs in{&tasks[ti], model, d, hw, &arm, lm};
              for (double x : compute_features(in)) detail += bits(x) + ' ';
              detail += '\n';
            }
            for (std::optional<double> acceptance : {std::optional<double>{}, std::optional<double>{0.0},
                                                     std::optional<double>{0.45}, std::optional<double>{1.0}}) {
              const auto e = estimate_roofline(tasks[ti], *model, d, *hw, arm, acceptance);
              for (double x : {e.weight_mb, e.step_ms, e.prefill_ms, e.forward_passes, e.total_ms}) detail += bits(x) + ' ';
              detail += '\n';
            }
            out << "  m" << m << " h" << h << " t" << ti << " d" << (d != nullptr) << ": " << fnv1a(detail) << "\n";
          }
        }
        ++h;
      }
      ++m;
    }
  }
  // The grammar's refusals, word for word.
  for (const char* bad : {"", "int8", "kv+int4", "kv+spec0", "kv+specx", "kv+spec", "kv+prune95", "kv+prune4", "kv+int8+int8",
                          "plain+kv", "kv+plain", "kv+kv", "kv+prune20+prune30", "kv+qspec4+qspec2", "kv+spec4+spec2",
                          "kv+spec4+qspec4", "kv+qspec4+spec2", "kv+int8+qspec4", "kv+qspec4+int8", "kv+qspec17", "kv+",
                          "kv++int8", "kv+INT8", "kv+int8+qspec4+spec2", "spec4", "kv+prune+30", "kv+prune030", "kv+spec-1"}) {
    std::string why = "-";
    try {
      parse_arm(bad);
    } catch (const Error& e) {
      why = e.what();
    }
    out << "error '" << bad << "': " << why << "\n";
  }
  return out.str();
}

// Features, roofline estimates and the model-free rules of every pinned arm equal the golden
// file bit for bit.
TEST(ArmGolden, FeaturesRooflineAndRulesAreBitIdentical) {
  const auto text = golden_text();
  if (std::getenv("EESCHED_UPDATE_GOLDEN")) {
    std::ofstream(kGolden) << text;
    GTEST_SKIP() << "wrote " << kGolden;
  }
  std::ifstream in(kGolden);
  ASSERT_TRUE(in) << "missing " << kGolden;
  std::stringstream golden;
  golden << in.rdbuf();
  std::istringstream want(golden.str()), got(text);
  std::string w, g;
  int line = 0;
  while (true) {
    const bool more_w = static_cast<bool>(std::getline(want, w)), more_g = static_cast<bool>(std::getline(got, g));
    ++line;
    if (!more_w && !more_g) break;
    ASSERT_EQ(more_w, more_g) << "the golden file and the computed text differ in length at line " << line;
    ASSERT_EQ(w, g) << "line " << line;
  }
}

}  // namespace
}  // namespace eesched::data
