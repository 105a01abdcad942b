#pragma once
// The hardware profile of a worker: what the selector needs to tell a fast machine from a slow
// one. Measured in a few seconds with plain C++ (no BLAS, no LibTorch) and cached per host
// and thread count, so starting a worker or a sweep stays quick.
#include <cstdint>
#include <filesystem>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace eesched::data {

struct HardwareProfile {
  std::string host;          // gethostname()
  std::string cpu_model;     // /proc/cpuinfo "model name", or "unknown"
  int threads = 1;           // threads the measurements (and the worker) use
  double gflops = 0;         // f32 matmul, GFLOP/s over `threads` threads
  double copy_gbps = 0;      // memcpy of buffers well above L3, GB/s (1e9 bytes copied per second)
  int64_t mem_total_bytes = 0;  // /proc/meminfo MemTotal
  int64_t mem_free_bytes = 0;   // /proc/meminfo MemAvailable (what a new model could still use)
  std::string measured_at;      // iso_utc() of the measurement

  bool operator==(const HardwareProfile&) const = default;
};

// Measures this machine with `threads` threads (<= 0: all hardware threads): the median of 5
// probes of each figure. Takes ~2.5 s.
HardwareProfile measure_hardware(int threads);

// The cached profile for this host and thread count, or a fresh measurement written to
// CACHE_DIR/hardware-v2-<host>-<threads>.json. An empty cache_dir means $XDG_CACHE_HOME/eesched or
// ~/.cache/eesched. Free memory is always re-read, since it changes; a cache that cannot be
// read or written is measured around, never an error.
HardwareProfile load_or_measure_hardware(const std::filesystem::path& cache_dir, int threads);

// The name a worker registers under: "<host>/threads=<n>" (one machine at two thread counts is
// two workers with different profiles).
std::string worker_name(const HardwareProfile& p);

void to_json(nlohmann::json& j, const HardwareProfile& p);
void from_json(const nlohmann::json& j, HardwareProfile& p);  // throws data::Error on a bad field

}  // namespace eesched::data
