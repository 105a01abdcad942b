#pragma once
// Task suites: JSONL files, one task per line,
//   {"id": str, "model": str, "draft": str, "prompt": str | "prompt_tokens": int,
//    "max_new_tokens": int, "batch": int, "temperature": float, "top_k": int, "top_p": float,
//    "seed": int, "quality": "exact" | "tolerant", "max_ppl_ratio": float}
// Required: id, model, exactly one of prompt / prompt_tokens, max_new_tokens. Optional, with
// these defaults: draft (none), batch 1, temperature 0 (greedy), top_k 0 (off), top_p 1, seed 0,
// quality "exact", max_ppl_ratio 1.05.
// Ranges: max_new_tokens 1..4096, batch 1..64, prompt_tokens >= 1, temperature >= 0,
// top_p in (0, 1]. Unknown keys are errors (a typo must not silently become a default).
// Blank lines and lines starting with '#' are skipped.
#include <filesystem>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "data/task.h"

namespace eesched::data {

// Every task of the suite. All bad lines are collected and reported together in one
// data::Error, one "FILE:LINE: reason" per line followed by the count; nothing is dropped.
std::vector<TaskSpec> read_suite(const std::filesystem::path& path);

// Writes tasks in the same format, atomically (temp file + rename). Throws data::Error, writing
// nothing, if a task would not read back (bad range, duplicate id).
void write_suite(const std::filesystem::path& path, const std::vector<TaskSpec>& tasks);

// One task as a JSON object; prompt_tokens is written only when there is no prompt text.
nlohmann::json task_to_json(const TaskSpec& task);
// Validates and converts one object; throws data::Error listing every problem, "; "-separated.
TaskSpec task_from_json(const nlohmann::json& j);

}  // namespace eesched::data
