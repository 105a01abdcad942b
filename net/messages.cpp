#include "net/messages.h"

#include <limits>

#include "data/error.h"

namespace eesched::net {
namespace {

using nlohmann::json;

[[noreturn]] void bad(const std::string& what) { throw ProtocolError(codes::kBadMessage, what); }

const json& member(const json& j, const char* name) {
  const auto it = j.find(name);
  if (it == j.end() || it->is_null()) bad(std::string("missing field \"") + name + "\"");
  return *it;
}

bool has(const json& j, const char* name) {
  const auto it = j.find(name);
  return it != j.end() && !it->is_null();
}

template <class T>
T field(const json& j, const char* name) {
  const json& v = member(j, name);
  if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean()) bad(std::string("field \"") + name + "\" must be a boolean");
  } else if constexpr (std::is_integral_v<T>) {
    if (!v.is_number_integer()) bad(std::string("field \"") + name + "\" must be an integer");
    if constexpr (std::is_unsigned_v<T>) {
      if (v.is_number_unsigned()) return v.get<T>();
      if (v.get<int64_t>() < 0) bad(std::string("field \"") + name + "\" must not be negative");
    } else {
      // Found by fuzzing: 11111111111111111117 would wrap to a negative int64.
      if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<T>::max()))
        bad(std::string("field \"") + name + "\" is out of range");
    }
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!v.is_number()) bad(std::string("field \"") + name + "\" must be a number");
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!v.is_string()) bad(std::string("field \"") + name + "\" must be a string");
  }
  return v.get<T>();
}

template <class T>
T field_or(const json& j, const char* name, T fallback) {
  return has(j, name) ? field<T>(j, name) : fallback;
}

std::vector<int64_t> id_list(const json& v, const std::string& name) {
  if (!v.is_array()) bad("field \"" + name + "\" must be an array of token ids");
  std::vector<int64_t> ids;
  ids.reserve(v.size());
  for (const auto& x : v) {
    if (!x.is_number_integer() || x.get<int64_t>() < 0) bad("field \"" + name + "\" must hold non-negative integer ids");
    ids.push_back(x.get<int64_t>());
  }
  return ids;
}

std::vector<std::vector<int64_t>> id_rows(const json& j, const char* name, bool allow_empty_rows) {
  const json& v = member(j, name);
  if (!v.is_array()) bad(std::string("field \"") + name + "\" must be an array of id arrays");
  std::vector<std::vector<int64_t>> rows;
  for (const auto& row : v) {
    rows.push_back(id_list(row, name));
    if (!allow_empty_rows && rows.back().empty()) bad(std::string("field \"") + name + "\" has an empty row");
  }
  return rows;
}

constexpr int64_t kMaxBatch = 64;

// GenerationParams travel as fields of the message that carries them (Submit's task, Assign):
// written and read here, once for both.
void put_generation(json& j, const data::GenerationParams& g) {
  j["max_new_tokens"] = g.max_new_tokens;
  j["temperature"] = g.temperature;
  j["top_k"] = g.top_k;
  j["top_p"] = g.top_p;
  j["seed"] = g.seed;
  j["stop_ids"] = g.stop_ids;
}

data::GenerationParams read_generation(const json& j, std::size_t batch) {
  data::GenerationParams g;
  g.max_new_tokens = field_or<int64_t>(j, "max_new_tokens", g.max_new_tokens);
  g.temperature = field_or<double>(j, "temperature", g.temperature);
  g.top_k = field_or<int64_t>(j, "top_k", g.top_k);
  g.top_p = field_or<double>(j, "top_p", g.top_p);
  g.seed = field_or<uint64_t>(j, "seed", g.seed);
  if (has(j, "stop_ids")) g.stop_ids = id_list(j["stop_ids"], "stop_ids");
  if (auto why = data::generation_refusal(g)) bad(*why);
  if (batch == 0 || static_cast<int64_t>(batch) > kMaxBatch) bad("prompt_ids must hold 1 to 64 rows");
  // The answer must fit in one frame too (a few bytes per id in JSON).
  if (static_cast<int64_t>(batch) * g.max_new_tokens > data::kMaxNewTokens) bad("rows x max_new_tokens must be at most 1048576");
  return g;
}

json base(MessageType t) { return make_message(t); }

}  // namespace

void to_json(json& j, const ModelInfo& m) {
  const auto& r = m.row;
  j = json{{"name", r.name},          {"fingerprint", r.fingerprint}, {"layers", r.layers},
           {"hidden", r.hidden},      {"intermediate", r.intermediate}, {"heads", r.heads},
           {"kv_heads", r.kv_heads},  {"vocab", r.vocab},             {"parameters", r.parameters},
           {"weight_bytes", r.weight_bytes}, {"dtype", r.dtype},      {"encrypted", r.encrypted},
           {"key_fingerprint", m.key_fingerprint}, {"draft", m.draft},
           {"quality", data::quality_to_json(r.quality)}, {"architecture", r.architecture}, {"head_dim", r.head_dim}};
}

void from_json(const json& j, ModelInfo& m) {
  if (!j.is_object()) bad("a model must be an object");
  auto& r = m.row;
  r.name = field<std::string>(j, "name");
  r.fingerprint = field<std::string>(j, "fingerprint");
  if (r.name.empty() || r.fingerprint.empty()) bad("a model needs a name and a fingerprint");
  r.layers = field<int64_t>(j, "layers");
  r.hidden = field<int64_t>(j, "hidden");
  r.intermediate = field<int64_t>(j, "intermediate");
  r.heads = field<int64_t>(j, "heads");
  r.kv_heads = field<int64_t>(j, "kv_heads");
  r.vocab = field<int64_t>(j, "vocab");
  r.parameters = field<int64_t>(j, "parameters");
  r.weight_bytes = field<int64_t>(j, "weight_bytes");
  r.dtype = field<std::string>(j, "dtype");
  r.encrypted = field<bool>(j, "encrypted");
  r.architecture = field_or<std::string>(j, "architecture", "llama");
  r.head_dim = field_or<int64_t>(j, "head_dim", 0);
  if (r.layers <= 0 || r.hidden <= 0 || r.vocab <= 0 || r.heads <= 0 || r.kv_heads <= 0 || r.head_dim < 0)
    bad("model '" + r.name + "' has a non-positive dimension");
  if (r.architecture.empty() || r.architecture.size() > 64) bad("model '" + r.name + "': architecture must be 1 to 64 characters");
  m.key_fingerprint = field_or<std::string>(j, "key_fingerprint", "");
  m.draft = field_or<bool>(j, "draft", false);
  if (has(j, "quality")) {
    try {
      r.quality = data::quality_from_json(j["quality"]);
    } catch (const data::Error& e) {
      bad("model '" + r.name + "': " + e.what());
    }
  }
}

void to_json(json& j, const TaskRequest& r) {
  j = json{{"request_id", r.request_id},
           {"model", r.model},
           {"key_fingerprint", r.key_fingerprint},
           {"prompt_ids", r.prompt_ids},
           {"quality", data::quality_name(r.quality)},
           {"max_ppl_ratio", r.max_ppl_ratio}};
  put_generation(j, r.generation);
  if (!r.arm.empty()) j["arm"] = r.arm;
}

void from_json(const json& j, TaskRequest& r) {
  if (!j.is_object()) bad("field \"task\" must be an object");
  r.request_id = field_or<std::string>(j, "request_id", "");
  if (r.request_id.size() > 128) bad("request_id is longer than 128 characters");
  r.model = field<std::string>(j, "model");
  if (r.model.empty()) bad("field \"model\" is empty");
  r.key_fingerprint = field_or<std::string>(j, "key_fingerprint", "");
  r.prompt_ids = id_rows(j, "prompt_ids", /*allow_empty_rows=*/false);
  r.generation = read_generation(j, r.prompt_ids.size());
  try {
    r.quality = data::parse_quality(field_or<std::string>(j, "quality", "exact"));
  } catch (const data::Error& e) {
    bad(e.what());
  }
  r.max_ppl_ratio = field_or<double>(j, "max_ppl_ratio", data::kDefaultMaxPplRatio);
  if (!(r.max_ppl_ratio >= 1) || r.max_ppl_ratio > 1000) bad("max_ppl_ratio must be in [1, 1000]");
  r.arm = field_or<std::string>(j, "arm", "");
}

void to_json(json& j, const RunReport& r) {
  j = json{{"ok", r.ok},
           {"tokens", r.tokens},
           {"latency_ms", r.latency_ms},
           {"ttft_ms", r.ttft_ms},
           {"ms_per_token", r.ms_per_token},
           {"tokens_per_s", r.tokens_per_s},
           {"new_tokens", r.new_tokens},
           {"peak_rss_bytes", r.peak_rss_bytes},
           {"started_at", r.started_at},
           {"ended_at", r.ended_at}};
  if (!r.error.empty()) j["error"] = r.error;
  if (r.acceptance_rate) j["acceptance_rate"] = *r.acceptance_rate;
}

void from_json(const json& j, RunReport& r) {
  if (!j.is_object()) bad("field \"report\" must be an object");
  r.ok = field<bool>(j, "ok");
  r.error = field_or<std::string>(j, "error", "");
  r.tokens = id_rows(j, "tokens", /*allow_empty_rows=*/true);
  r.latency_ms = field_or<double>(j, "latency_ms", 0);
  r.ttft_ms = field_or<double>(j, "ttft_ms", 0);
  r.ms_per_token = field_or<double>(j, "ms_per_token", 0);
  r.tokens_per_s = field_or<double>(j, "tokens_per_s", 0);
  r.new_tokens = field_or<int64_t>(j, "new_tokens", 0);
  r.peak_rss_bytes = field_or<int64_t>(j, "peak_rss_bytes", 0);
  if (has(j, "acceptance_rate")) r.acceptance_rate = field<double>(j, "acceptance_rate");
  r.started_at = field_or<std::string>(j, "started_at", "");
  r.ended_at = field_or<std::string>(j, "ended_at", "");
  if (!(r.latency_ms >= 0)) bad("latency_ms must not be negative");
}

json to_message(const Hello& m) {
  auto j = base(MessageType::Hello);
  j["nonce"] = m.nonce;
  j["server"] = m.server;
  return j;
}

json to_message(const Register& m) {
  auto j = base(MessageType::Register);
  j["name"] = m.name;
  j["hardware"] = m.hardware;
  j["models"] = m.models;
  j["dry_run"] = m.dry_run;
  j["slots"] = m.slots;
  j["nonce"] = m.nonce;
  j["proof"] = m.proof;
  return j;
}

json to_message(const Registered& m) {
  auto j = base(MessageType::Registered);
  j["worker_id"] = m.worker_id;
  j["proof"] = m.proof;
  j["heartbeat_ms"] = m.heartbeat_ms;
  return j;
}

json to_message(const Heartbeat& m) {
  auto j = base(MessageType::Heartbeat);
  j["queued"] = m.queued;
  if (m.draining) j["draining"] = true;  // absent: false (peers before draining existed send none)
  return j;
}

json to_message(const Submit& m) {
  auto j = base(MessageType::Submit);
  j["task"] = m.task;
  return j;
}

json to_message(const Accepted& m) {
  auto j = base(MessageType::Accepted);
  j["task_id"] = m.task_id;
  j["request_id"] = m.request_id;
  return j;
}

json to_message(const Assign& m) {
  auto j = base(MessageType::Assign);
  j["task_id"] = m.task_id;
  j["attempt"] = m.attempt;
  j["arm"] = m.arm;
  j["model"] = m.model;
  j["draft"] = m.draft;
  j["prompt_ids"] = m.prompt_ids;
  put_generation(j, m.generation);
  j["time_limit_ms"] = m.time_limit_ms;
  if (m.resume_from > 0) j["resume_from"] = m.resume_from;
  return j;
}

json to_message(const Tokens& m) {
  auto j = base(MessageType::Tokens);
  j["task_id"] = m.task_id;
  j["attempt"] = m.attempt;
  if (!m.request_id.empty()) j["request_id"] = m.request_id;
  j["offsets"] = m.offsets;
  j["tokens"] = m.tokens;
  return j;
}

json to_message(const Result& m) {
  auto j = base(MessageType::Result);
  j["task_id"] = m.task_id;
  j["attempt"] = m.attempt;
  j["report"] = m.report;
  if (!m.request_id.empty()) j["request_id"] = m.request_id;
  if (!m.status.empty()) j["status"] = m.status;
  if (!m.worker.empty()) j["worker"] = m.worker;
  if (!m.arm.empty()) j["arm"] = m.arm;
  j["explored"] = m.explored;
  j["attempts"] = m.attempts;
  j["predicted_ms"] = m.predicted_ms;
  if (m.ppl_ratio) j["ppl_ratio"] = *m.ppl_ratio;
  return j;
}

json to_message(const Cancel& m) {
  auto j = base(MessageType::Cancel);
  if (m.task_id > 0) j["task_id"] = m.task_id;
  if (!m.request_id.empty()) j["request_id"] = m.request_id;
  return j;
}

json to_message(const ErrorMsg& m) { return make_error(m.code, m.message, m.task_id); }

json to_message(const Status&) { return base(MessageType::Status); }

json to_message(const StatusReply& m) {
  auto j = base(MessageType::StatusReply);
  j["workers"] = m.workers;
  j["queued"] = m.queued;
  j["models"] = json::array();
  for (const auto& s : m.models)
    j["models"].push_back({{"name", s.name}, {"key_fingerprint", s.key_fingerprint}, {"workers", s.workers}, {"slots", s.slots}});
  return j;
}

template <>
Hello read_message<Hello>(const json& j) {
  return {field<std::string>(j, "nonce"), field_or<std::string>(j, "server", "")};
}

template <>
Register read_message<Register>(const json& j) {
  Register m;
  m.name = field<std::string>(j, "name");
  if (m.name.empty() || m.name.size() > 256) bad("worker name must be 1 to 256 characters");
  try {
    m.hardware = member(j, "hardware").get<data::HardwareProfile>();
  } catch (const data::Error& e) {
    bad(std::string("hardware: ") + e.what());
  } catch (const nlohmann::json::exception& e) {
    bad(std::string("hardware: ") + e.what());
  }
  const json& models = member(j, "models");
  if (!models.is_array()) bad("field \"models\" must be an array");
  for (const auto& mj : models) m.models.push_back(mj.get<ModelInfo>());
  m.dry_run = field_or<bool>(j, "dry_run", false);
  m.slots = field_or<int64_t>(j, "slots", 1);
  if (m.slots < 1) bad("field \"slots\" must be at least 1");
  m.nonce = field<std::string>(j, "nonce");
  m.proof = field<std::string>(j, "proof");
  return m;
}

template <>
Registered read_message<Registered>(const json& j) {
  Registered m;
  m.worker_id = field<int64_t>(j, "worker_id");
  m.proof = field<std::string>(j, "proof");
  m.heartbeat_ms = field_or<int64_t>(j, "heartbeat_ms", 1000);
  if (m.heartbeat_ms < 10) bad("heartbeat_ms must be at least 10");
  return m;
}

template <>
Heartbeat read_message<Heartbeat>(const json& j) {
  Heartbeat m;
  m.queued = field_or<int64_t>(j, "queued", 0);
  m.draining = field_or<bool>(j, "draining", false);
  return m;
}

template <>
Submit read_message<Submit>(const json& j) {
  return {member(j, "task").get<TaskRequest>()};
}

template <>
Accepted read_message<Accepted>(const json& j) {
  return {field<int64_t>(j, "task_id"), field_or<std::string>(j, "request_id", "")};
}

template <>
Assign read_message<Assign>(const json& j) {
  Assign m;
  m.task_id = field<int64_t>(j, "task_id");
  m.attempt = field<int64_t>(j, "attempt");
  m.arm = field<std::string>(j, "arm");
  m.model = field<std::string>(j, "model");
  m.draft = field_or<std::string>(j, "draft", "");
  m.prompt_ids = id_rows(j, "prompt_ids", /*allow_empty_rows=*/false);
  member(j, "max_new_tokens");  // a coordinator always says how long the answer may be
  m.generation = read_generation(j, m.prompt_ids.size());
  m.time_limit_ms = field_or<double>(j, "time_limit_ms", 0.0);
  if (!(m.time_limit_ms >= 0)) bad("time_limit_ms must not be negative");
  m.resume_from = field_or<int64_t>(j, "resume_from", 0);
  if (m.resume_from < 0 || m.resume_from > data::kMaxNewTokens) bad("resume_from must be 0 to 1048576");
  for (const auto& row : m.prompt_ids)
    if (static_cast<int64_t>(row.size()) <= m.resume_from) bad("resume_from must be shorter than every prompt row");
  return m;
}

template <>
Tokens read_message<Tokens>(const json& j) {
  Tokens m;
  m.task_id = field<int64_t>(j, "task_id");
  m.attempt = field_or<int64_t>(j, "attempt", 1);
  if (m.task_id < 1 || m.attempt < 1) bad("task_id and attempt must be positive");
  m.request_id = field_or<std::string>(j, "request_id", "");
  if (m.request_id.size() > 128) bad("request_id is longer than 128 characters");
  const json& offsets = member(j, "offsets");
  if (!offsets.is_array()) bad("field \"offsets\" must be an array of counts");
  for (const auto& x : offsets) {
    if (!x.is_number_integer() || x.get<int64_t>() < 0) bad("field \"offsets\" must hold non-negative integers");
    m.offsets.push_back(x.get<int64_t>());
  }
  m.tokens = id_rows(j, "tokens", /*allow_empty_rows=*/true);
  if (m.tokens.size() != m.offsets.size()) bad("fields \"offsets\" and \"tokens\" must have one entry per batch row");
  if (m.tokens.empty() || static_cast<int64_t>(m.tokens.size()) > kMaxBatch) bad("tokens must hold 1 to 64 rows");
  // No answer is longer than a task may ask for (rows x max_new_tokens, read_generation).
  int64_t total = 0;
  for (std::size_t r = 0; r < m.tokens.size(); ++r) {
    if (m.offsets[r] > data::kMaxNewTokens) bad("offsets must be at most 1048576");
    total += m.offsets[r] + static_cast<int64_t>(m.tokens[r].size());
  }
  if (total > data::kMaxNewTokens) bad("offsets plus tokens over all rows must be at most 1048576");
  return m;
}

template <>
Result read_message<Result>(const json& j) {
  Result m;
  m.task_id = field<int64_t>(j, "task_id");
  m.attempt = field_or<int64_t>(j, "attempt", 1);
  m.report = member(j, "report").get<RunReport>();
  m.request_id = field_or<std::string>(j, "request_id", "");
  m.status = field_or<std::string>(j, "status", "");
  m.worker = field_or<std::string>(j, "worker", "");
  m.arm = field_or<std::string>(j, "arm", "");
  m.explored = field_or<bool>(j, "explored", false);
  m.attempts = field_or<int64_t>(j, "attempts", 0);
  m.predicted_ms = field_or<double>(j, "predicted_ms", 0.0);
  if (has(j, "ppl_ratio")) m.ppl_ratio = field<double>(j, "ppl_ratio");
  return m;
}

template <>
Cancel read_message<Cancel>(const json& j) {
  Cancel m;
  m.task_id = field_or<int64_t>(j, "task_id", 0);
  m.request_id = field_or<std::string>(j, "request_id", "");
  if (m.task_id < 0) bad("Cancel task_id must be positive");  // else it reads back as request_id alone
  if (m.task_id == 0 && m.request_id.empty()) bad("Cancel needs a task_id or a request_id");
  return m;
}

template <>
ErrorMsg read_message<ErrorMsg>(const json& j) {
  ErrorMsg m;
  m.code = field<std::string>(j, "code");
  m.message = field_or<std::string>(j, "message", "");
  if (has(j, "task_id")) m.task_id = field<int64_t>(j, "task_id");
  return m;
}

template <>
Status read_message<Status>(const json&) {
  return {};
}

template <>
StatusReply read_message<StatusReply>(const json& j) {
  StatusReply m;
  m.workers = field<int64_t>(j, "workers");
  m.queued = field_or<int64_t>(j, "queued", 0);
  if (m.workers < 0 || m.queued < 0) bad("StatusReply counts must not be negative");
  const json& models = member(j, "models");
  if (!models.is_array()) bad("field \"models\" must be an array");
  for (const auto& mj : models) {
    ServedModel s;
    s.name = field<std::string>(mj, "name");
    s.key_fingerprint = field_or<std::string>(mj, "key_fingerprint", "");
    s.workers = field<int64_t>(mj, "workers");
    s.slots = field_or<int64_t>(mj, "slots", 0);
    if (s.workers < 0 || s.slots < 0) bad("StatusReply model counts must not be negative");
    m.models.push_back(std::move(s));
  }
  return m;
}

namespace {

template <class T>
Payload decode(const json& j) {
  return read_message<T>(j);
}

}  // namespace

Message parse_message(std::string_view body) {
  Envelope e = parse_envelope(body);
  static constexpr Payload (*kDecoders[])(const json&) = {
      decode<Hello>,    decode<Register>, decode<Registered>, decode<Heartbeat>, decode<Submit>,
      decode<Accepted>, decode<Assign>,   decode<Tokens>,     decode<Result>,    decode<Cancel>, decode<ErrorMsg>,
      decode<Status>,   decode<StatusReply>};
  static_assert(std::size(kDecoders) == std::variant_size_v<Payload>);
  try {
    return {e.type, kDecoders[static_cast<std::size_t>(e.type)](e.body)};
  } catch (const ProtocolError&) {
    throw;
  } catch (const std::exception& ex) {  // a nested get<> on a wrong type
    bad(std::string(message_type_name(e.type)) + ": " + ex.what());
  }
}

json to_message(const Payload& payload) {
  return std::visit([](const auto& m) { return to_message(m); }, payload);
}

}  // namespace eesched::net
