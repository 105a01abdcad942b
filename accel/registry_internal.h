#pragma once
// Shared by the built-in accelerations and the registry; not part of accel/'s public API.
#include <memory>
#include <optional>
#include <string>

#include "accel/acceleration.h"

namespace eesched::accel {

inline constexpr int kStageShape = 0;   // pruning
inline constexpr int kStageFormat = 1;  // int8, bf16, f16
inline constexpr int kStageDecode = 2;  // KV cache, speculative decoding

// Built-in factories: each returns null for a component that is not its kind.
std::unique_ptr<Acceleration> make_kv_cache(const std::string& component);
std::unique_ptr<Acceleration> make_int8(const std::string& component);
std::unique_ptr<Acceleration> make_half_precision(const std::string& component);
std::unique_ptr<Acceleration> make_pruning(const std::string& component);
std::unique_ptr<Acceleration> make_speculative(const std::string& component);

// The component's number when it is of the kind `prefix` in data/arm_components.h's table
// ("spec4" -> 4 for "spec", "int8" -> 0 for "int8"), nullopt when it is another kind or none.
// The table holds the pattern and range: a factory spells only the kind it implements. Throws
// data::Error for a number outside the kind's range.
std::optional<int> component_number(const std::string& component, const std::string& prefix);

}  // namespace eesched::accel
