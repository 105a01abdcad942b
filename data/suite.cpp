#include "data/suite.h"

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>

#include "data/error.h"

namespace eesched::data {
namespace {

using nlohmann::json;

constexpr size_t kMaxListed = 100;  // bad lines listed in one error; the count covers the rest

const std::set<std::string>& known_keys() {
  static const std::set<std::string> keys{"id",    "model", "draft",       "prompt", "prompt_tokens", "max_new_tokens",
                                          "batch", "temperature", "top_k", "top_p", "seed", "quality", "max_ppl_ratio"};
  return keys;
}

std::string join(const std::vector<std::string>& parts, const std::string& sep) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : sep) + p;
  return out;
}

// Integer `key` in [lo, hi]; nullopt (with a problem noted) when absent-but-required or bad.
std::optional<int64_t> get_int(const json& j, const char* key, int64_t lo, int64_t hi, std::vector<std::string>& problems) {
  const auto it = j.find(key);
  if (it == j.end()) return std::nullopt;
  const std::string range = std::string(key) + " must be in " + std::to_string(lo) + ".." + std::to_string(hi);
  if (!it->is_number_integer()) {
    problems.push_back(std::string(key) + " must be an integer");
    return std::nullopt;
  }
  if (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(hi)) {
    problems.push_back(range);
    return std::nullopt;
  }
  const auto v = it->get<int64_t>();
  if (v < lo || v > hi) {
    problems.push_back(range);
    return std::nullopt;
  }
  return v;
}

std::optional<double> get_number(const json& j, const char* key, std::vector<std::string>& problems) {
  const auto it = j.find(key);
  if (it == j.end()) return std::nullopt;
  if (!it->is_number() || !std::isfinite(it->get<double>())) {
    problems.push_back(std::string(key) + " must be a number");
    return std::nullopt;
  }
  return it->get<double>();
}

// A string `key`; nullopt when absent or not a (non-empty, when required) string.
std::optional<std::string> get_string(const json& j, const char* key, std::vector<std::string>& problems) {
  const auto it = j.find(key);
  if (it == j.end()) return std::nullopt;
  if (!it->is_string()) {
    problems.push_back(std::string(key) + " must be a string");
    return std::nullopt;
  }
  return it->get<std::string>();
}

// All problems of one task object, filling `out` as far as it can.
std::vector<std::string> check(const json& j, TaskSpec& out) {
  std::vector<std::string> problems;
  if (!j.is_object()) return {"expected a JSON object"};
  for (const auto& [key, value] : j.items())
    if (!known_keys().count(key)) problems.push_back("unknown key '" + key + "'");

  if (auto id = get_string(j, "id", problems)) {
    if (id->empty()) problems.push_back("id must not be empty");
    out.id = *id;
  } else if (!j.contains("id")) {
    problems.push_back("missing id");
  }
  if (auto model = get_string(j, "model", problems)) {
    if (model->empty()) problems.push_back("model must not be empty");
    out.model = *model;
  } else if (!j.contains("model")) {
    problems.push_back("missing model");
  }
  if (auto draft = get_string(j, "draft", problems)) {
    if (draft->empty()) problems.push_back("draft must not be empty when given");
    out.draft = *draft;
  }

  const bool has_prompt = j.contains("prompt"), has_tokens = j.contains("prompt_tokens");
  if (has_prompt && has_tokens) problems.push_back("give prompt or prompt_tokens, not both");
  if (!has_prompt && !has_tokens) problems.push_back("missing prompt or prompt_tokens");
  if (auto prompt = get_string(j, "prompt", problems)) {
    if (prompt->empty()) problems.push_back("prompt must not be empty");
    out.prompt = *prompt;
  }
  if (auto n = get_int(j, "prompt_tokens", 1, 1'000'000, problems)) out.prompt_tokens = *n;

  auto& g = out.generation;
  if (auto n = get_int(j, "max_new_tokens", 1, 4096, problems))
    g.max_new_tokens = *n;
  else if (!j.contains("max_new_tokens"))
    problems.push_back("missing max_new_tokens");
  if (auto n = get_int(j, "batch", 1, 64, problems)) out.batch = *n;

  if (auto t = get_number(j, "temperature", problems)) {
    if (*t < 0) problems.push_back("temperature must be >= 0");
    g.temperature = *t;
  }
  if (auto k = get_int(j, "top_k", 0, 1'000'000, problems)) g.top_k = *k;
  if (auto p = get_number(j, "top_p", problems)) {
    if (!(*p > 0 && *p <= 1)) problems.push_back("top_p must be in (0, 1]");
    g.top_p = *p;
  }
  if (auto seed = get_int(j, "seed", 0, std::numeric_limits<int64_t>::max(), problems)) g.seed = static_cast<uint64_t>(*seed);
  if (auto q = get_string(j, "quality", problems)) {
    try {
      out.quality = parse_quality(*q);
    } catch (const Error& e) {
      problems.push_back(e.what());
    }
  }
  if (auto r = get_number(j, "max_ppl_ratio", problems)) {
    if (!(*r >= 1 && *r <= 1000)) problems.push_back("max_ppl_ratio must be in [1, 1000]");
    out.max_ppl_ratio = *r;
  }
  return problems;
}

template <class Json>
Json make_json(const TaskSpec& t) {
  Json j;
  j["id"] = t.id;
  j["model"] = t.model;
  if (!t.draft.empty()) j["draft"] = t.draft;
  if (!t.prompt.empty())
    j["prompt"] = t.prompt;
  else
    j["prompt_tokens"] = t.prompt_tokens;
  j["max_new_tokens"] = t.generation.max_new_tokens;
  j["batch"] = t.batch;
  j["temperature"] = t.generation.temperature;
  if (t.generation.top_k != 0) j["top_k"] = t.generation.top_k;
  j["top_p"] = t.generation.top_p;
  if (t.generation.seed != 0) j["seed"] = t.generation.seed;
  j["quality"] = quality_name(t.quality);
  if (t.max_ppl_ratio != kDefaultMaxPplRatio) j["max_ppl_ratio"] = t.max_ppl_ratio;
  return j;
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

}  // namespace

json task_to_json(const TaskSpec& task) { return make_json<json>(task); }

TaskSpec task_from_json(const json& j) {
  TaskSpec t;
  const auto problems = check(j, t);
  if (!problems.empty()) throw Error("task" + (t.id.empty() ? "" : " '" + t.id + "'") + ": " + join(problems, "; "));
  return t;
}

std::vector<TaskSpec> read_suite(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw Error(path.string() + ": cannot open task suite");
  std::vector<TaskSpec> tasks;
  std::vector<std::string> bad;  // "FILE:LINE: reason"
  size_t bad_count = 0;
  std::map<std::string, size_t> first_line;  // id -> line it first appeared on
  std::string line;
  for (size_t number = 1; std::getline(in, line); ++number) {
    if (number == 1 && line.rfind("\xEF\xBB\xBF", 0) == 0) line.erase(0, 3);  // UTF-8 BOM
    const std::string text = trim(line);
    if (text.empty() || text[0] == '#') continue;
    std::vector<std::string> problems;
    TaskSpec task;
    try {
      problems = check(json::parse(text), task);
    } catch (const json::parse_error& e) {
      problems.push_back("invalid JSON at column " + std::to_string(e.byte));
    }
    if (!task.id.empty()) {
      const auto [it, fresh] = first_line.emplace(task.id, number);
      if (!fresh) problems.push_back("duplicate id '" + task.id + "' (first on line " + std::to_string(it->second) + ")");
    }
    if (problems.empty()) {
      tasks.push_back(std::move(task));
    } else {
      ++bad_count;
      if (bad.size() < kMaxListed) bad.push_back(path.string() + ":" + std::to_string(number) + ": " + join(problems, "; "));
    }
  }
  if (in.bad()) throw Error(path.string() + ": read error");
  if (bad_count) {
    const std::string more = bad_count > bad.size() ? " (first " + std::to_string(bad.size()) + " listed)" : "";
    throw Error(join(bad, "\n") + "\n" + std::to_string(bad_count) + " bad line" + (bad_count == 1 ? "" : "s") + " in " +
                path.string() + more);
  }
  if (tasks.empty()) throw Error(path.string() + ": no tasks");
  return tasks;
}

void write_suite(const std::filesystem::path& path, const std::vector<TaskSpec>& tasks) {
  std::string text;
  std::vector<std::string> bad;
  std::set<std::string> ids;
  for (size_t i = 0; i < tasks.size(); ++i) {
    const auto& t = tasks[i];
    const std::string where = "task #" + std::to_string(i + 1) + (t.id.empty() ? "" : " '" + t.id + "'");
    std::vector<std::string> problems;
    try {
      // Checked through the reader's own validation: what is written always reads back.
      const std::string line = make_json<nlohmann::ordered_json>(t).dump();
      TaskSpec back;
      problems = check(json::parse(line), back);
      if (problems.empty()) text += line + "\n";
    } catch (const nlohmann::json::type_error&) {
      problems.push_back("text is not valid UTF-8");
    }
    if (!ids.insert(t.id).second) problems.push_back("duplicate id");
    if (!problems.empty()) bad.push_back(where + ": " + join(problems, "; "));
  }
  if (!bad.empty()) throw Error(path.string() + ": cannot write suite: " + join(bad, " | "));

  // Same directory as the target, so the rename is atomic.
  const auto tmp = std::filesystem::path(path.string() + ".tmp." + std::to_string(getpid()));
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw Error(tmp.string() + ": cannot create");
    out << text;
    out.flush();
    if (!out) {
      std::error_code ec;
      std::filesystem::remove(tmp, ec);
      throw Error(tmp.string() + ": write failed");
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    throw Error(path.string() + ": cannot replace: " + ec.message());
  }
}

}  // namespace eesched::data
