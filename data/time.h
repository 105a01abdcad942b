#pragma once
// The one timestamp format every record uses: ISO-8601 UTC with milliseconds,
// "2024-05-01T12:34:56.789Z". It sorts as text, so "since" queries compare strings.
#include <chrono>
#include <string>

namespace eesched::data {

std::string iso_utc(std::chrono::system_clock::time_point t);
std::string iso_utc_now();

}  // namespace eesched::data
