#pragma once
// The generation of the kernels and execution code whose latencies the store's runs record
// (runs.code_version). Bump kCodeVersion when a change in runtime/, accel/ or node/'s execution
// changes latencies; raise kOldestCompatibleCodeVersion when older runs no longer describe the
// current code (training skips them by default). Version 1 is every run recorded before runs
// carried a version (the schema migration's default).
#include <cstdint>

namespace eesched::data {

inline constexpr int64_t kCodeVersion = 2;                  // what runs measured by this build record
inline constexpr int64_t kOldestCompatibleCodeVersion = 2;  // the oldest whose runs still describe this build

}  // namespace eesched::data
