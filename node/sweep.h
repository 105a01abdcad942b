#pragma once
// eesched bench: the sweep that produces the selector's history. Every applicable arm of every
// task of a suite, on this machine at each requested thread count, each run recorded in the
// performance store. Plaintext, or encrypted with a key (models encrypted on the fly; the store
// then holds only encrypted prompt ids).
//
// Resumable and kill-safe: a run is one row written in one transaction after it finishes, and
// (task, worker, arm, policy, repeat) is unique, so a restarted sweep skips what is recorded and a
// killed one leaves no partial row.
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "data/arm.h"

namespace eesched::node {

struct SweepProgress {
  int64_t done = 0, total = 0;  // runs handled (recorded, skipped or failed) of all planned
  int64_t recorded = 0, skipped = 0, failed = 0;
  double elapsed_s = 0, eta_s = 0;
  std::string current;          // "task arm threads"
};

struct SweepOptions {
  std::filesystem::path suite, db;
  std::filesystem::path models_dir = "models";  // suite model names resolve to MODELS_DIR/NAME
  std::vector<data::Arm> arms;                  // empty: the catalog
  std::vector<int> threads;                     // empty: all cores
  int repeats = 1;                              // measured runs per (task, threads, arm), at most
  double race = 0;                              // > 1: after the first round, re-measure only arms whose
                                                // median is within race x the best median (0: every arm)
  double cap = 0;                               // >= 1: adaptive capping, stop a run once it takes cap x the
                                                // best median so far on its task (0: off; see sweep.cpp)
  std::string key_file;                         // empty: plaintext models
  double time_limit_s = 60;                     // per run; a run over it is recorded as failed
  std::filesystem::path hardware_cache;         // "" = default cache directory
  std::function<void(const SweepProgress&)> progress;
  const std::atomic<bool>* stop = nullptr;      // when set, finish the current run and return
};

struct SweepSummary {
  int64_t planned = 0, recorded = 0, skipped = 0, failed = 0, refused = 0;
  int64_t raced_out = 0;  // planned repeats not run: the arm was out of the race
  int64_t capped = 0;     // runs stopped by the adaptive cap (recorded as timeouts, also counted in failed)
  bool interrupted = false;
  double seconds = 0;
};

// Names without a directory that match a synthetic preset ("syn25m", "syn110m", "syn350m") are
// the seeded random models of that preset (seed 0), built in memory.
SweepSummary run_sweep(const SweepOptions& options);

}  // namespace eesched::node
