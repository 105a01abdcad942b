#include "gateway/openai_api.h"

#include <cmath>
#include <limits>

namespace eesched::gateway {

ApiError::ApiError(int status_, std::string type_, const std::string& message, std::string param_, std::string code_)
    : std::runtime_error(message), status(status_), type(std::move(type_)), param(std::move(param_)), code(std::move(code_)) {}

nlohmann::json ApiError::to_json() const {
  const auto or_null = [](const std::string& s) { return s.empty() ? nlohmann::json(nullptr) : nlohmann::json(s); };
  return {{"error", {{"message", what()}, {"type", type}, {"param", or_null(param)}, {"code", or_null(code)}}}};
}

ApiError bad_request(const std::string& message, const std::string& param) {
  return ApiError(400, "invalid_request_error", message, param);
}

namespace {

const char* object_name(Endpoint e, bool chunk) {
  if (e == Endpoint::Chat) return chunk ? "chat.completion.chunk" : "chat.completion";
  return "text_completion";
}

// Numbers as the API takes them: a JSON number (an integer where it says integer), else 400.
// `prefix` qualifies a field of a nested object ("eesched.") in the error's message and param.
double number_field(const nlohmann::json& j, const char* name, double lo, double hi, const std::string& prefix = "") {
  const auto& v = j.at(name);
  const std::string param = prefix + name;
  if (!v.is_number()) throw bad_request("'" + param + "' must be a number", param);
  const double x = v.get<double>();
  if (!(x >= lo && x <= hi))
    throw bad_request("'" + param + "' must be between " + nlohmann::json(lo).dump() + " and " + nlohmann::json(hi).dump(), param);
  return x;
}

int64_t integer_field(const nlohmann::json& j, const char* name, int64_t lo, int64_t hi) {
  const auto& v = j.at(name);
  if (!v.is_number_integer()) throw bad_request(std::string("'") + name + "' must be an integer", name);
  const auto x = v.get<int64_t>();
  if (x < lo || x > hi)
    throw bad_request(std::string("'") + name + "' must be between " + std::to_string(lo) + " and " + std::to_string(hi), name);
  return x;
}

bool has(const nlohmann::json& j, const char* name) { return j.contains(name) && !j.at(name).is_null(); }

// A message's content: a string, or an array of {"type": "text", "text": ...} parts (joined).
std::string message_content(const nlohmann::json& content, const std::string& param) {
  if (content.is_string()) return content.get<std::string>();
  if (content.is_array()) {
    std::string text;
    for (const auto& part : content) {
      if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string())
        throw bad_request("only text content parts are supported", param);
      text += part["text"].get<std::string>();
    }
    return text;
  }
  throw bad_request("content must be a string or an array of text parts", param);
}

std::vector<runtime::ChatMessage> parse_messages(const nlohmann::json& j) {
  if (!has(j, "messages")) throw bad_request("'messages' is required", "messages");
  const auto& m = j.at("messages");
  if (!m.is_array() || m.empty()) throw bad_request("'messages' must be a non-empty array", "messages");
  std::vector<runtime::ChatMessage> out;
  for (std::size_t i = 0; i < m.size(); ++i) {
    const std::string param = "messages[" + std::to_string(i) + "]";
    const auto& msg = m[i];
    if (!msg.is_object() || !msg.contains("role") || !msg["role"].is_string()) throw bad_request(param + " needs a string 'role'", param + ".role");
    std::string role = msg["role"].get<std::string>();
    if (role == "developer") role = "system";  // the API's newer name for the system turn
    if (role != "system" && role != "user" && role != "assistant")
      throw bad_request(param + ".role '" + role + "' is not supported (system, developer, user, assistant)", param + ".role");
    out.push_back({role, has(msg, "content") ? message_content(msg["content"], param + ".content") : std::string()});
  }
  return out;
}

std::vector<std::string> parse_stop(const nlohmann::json& j) {
  if (!has(j, "stop")) return {};
  const auto& s = j.at("stop");
  std::vector<std::string> out;
  if (s.is_string()) {
    out.push_back(s.get<std::string>());
  } else if (s.is_array()) {
    for (const auto& x : s) {
      if (!x.is_string()) throw bad_request("'stop' must be a string or an array of strings", "stop");
      out.push_back(x.get<std::string>());
    }
  } else {
    throw bad_request("'stop' must be a string or an array of strings", "stop");
  }
  if (out.size() > 4) throw bad_request("'stop' takes at most 4 sequences", "stop");
  for (const auto& x : out)
    if (x.empty()) throw bad_request("'stop' sequences must not be empty", "stop");
  return out;
}

}  // namespace

CompletionRequest parse_completion_request(const std::string& body, Endpoint endpoint, int64_t default_max_tokens) {
  const auto j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw bad_request("the request body is not valid JSON", "");
  if (!j.is_object()) throw bad_request("the request body must be a JSON object", "");
  CompletionRequest r;
  r.endpoint = endpoint;
  if (!has(j, "model") || !j["model"].is_string()) throw bad_request("'model' is required (a string)", "model");
  r.model = j["model"].get<std::string>();
  if (endpoint == Endpoint::Chat) {
    r.messages = parse_messages(j);
  } else {
    if (!has(j, "prompt")) throw bad_request("'prompt' is required", "prompt");
    const auto& p = j["prompt"];
    if (p.is_string()) r.prompt = p.get<std::string>();
    else if (p.is_array() && p.size() == 1 && p[0].is_string()) r.prompt = p[0].get<std::string>();
    else throw bad_request("'prompt' must be a string (one prompt per request)", "prompt");
  }
  r.generation.max_new_tokens = default_max_tokens;
  for (const char* name : {"max_completion_tokens", "max_tokens"})
    if (has(j, name)) r.generation.max_new_tokens = integer_field(j, name, 1, data::kMaxNewTokens);
  if (has(j, "temperature")) r.generation.temperature = number_field(j, "temperature", 0.0, 2.0);
  if (has(j, "top_p")) {
    r.generation.top_p = number_field(j, "top_p", 0.0, 1.0);
    if (r.generation.top_p == 0.0) r.generation.top_p = std::numeric_limits<double>::min();  // 0: only the most likely token
  }
  if (has(j, "seed")) r.generation.seed = static_cast<uint64_t>(integer_field(j, "seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()));
  if (has(j, "n") && integer_field(j, "n", 1, 128) != 1) throw bad_request("only n = 1 is supported", "n");
  r.stop = parse_stop(j);
  if (has(j, "stream")) {
    if (!j["stream"].is_boolean()) throw bad_request("'stream' must be a boolean", "stream");
    r.stream = j["stream"].get<bool>();
  }
  if (has(j, "stream_options")) {
    const auto& o = j["stream_options"];
    if (!o.is_object()) throw bad_request("'stream_options' must be an object", "stream_options");
    if (!r.stream) throw bad_request("'stream_options' is only allowed when 'stream' is true", "stream_options");
    if (has(o, "include_usage")) {
      if (!o["include_usage"].is_boolean()) throw bad_request("'stream_options.include_usage' must be a boolean", "stream_options.include_usage");
      r.include_usage = o["include_usage"].get<bool>();
    }
  }
  if (has(j, "eesched")) {
    const auto& e = j["eesched"];
    if (!e.is_object()) throw bad_request("'eesched' must be an object", "eesched");
    if (has(e, "quality")) {
      if (!e["quality"].is_string()) throw bad_request("'eesched.quality' must be \"exact\" or \"tolerant\"", "eesched.quality");
      const auto q = e["quality"].get<std::string>();
      if (q == "exact") r.quality = data::Quality::Exact;
      else if (q == "tolerant") r.quality = data::Quality::Tolerant;
      else throw bad_request("'eesched.quality' must be \"exact\" or \"tolerant\"", "eesched.quality");
    }
    if (has(e, "max_ppl_ratio")) r.max_ppl_ratio = number_field(e, "max_ppl_ratio", 1.0, 1000.0, "eesched.");
    if (has(e, "arm")) {
      if (!e["arm"].is_string()) throw bad_request("'eesched.arm' must be a string", "eesched.arm");
      r.arm = e["arm"].get<std::string>();
    }
    if (has(e, "ignore_eos")) {
      if (!e["ignore_eos"].is_boolean()) throw bad_request("'eesched.ignore_eos' must be a boolean", "eesched.ignore_eos");
      r.ignore_eos = e["ignore_eos"].get<bool>();
    }
  }
  return r;
}

nlohmann::json Usage::to_json() const {
  return {{"prompt_tokens", prompt_tokens}, {"completion_tokens", completion_tokens}, {"total_tokens", prompt_tokens + completion_tokens}};
}

nlohmann::json completion_response(Endpoint endpoint, const std::string& id, int64_t created, const std::string& model,
                                   const std::string& text, const std::string& finish_reason, const Usage& usage) {
  nlohmann::json choice = {{"index", 0}, {"finish_reason", finish_reason}, {"logprobs", nullptr}};
  if (endpoint == Endpoint::Chat) choice["message"] = {{"role", "assistant"}, {"content", text}};
  else choice["text"] = text;
  return {{"id", id},          {"object", object_name(endpoint, false)}, {"created", created},
          {"model", model},    {"choices", nlohmann::json::array({choice})}, {"usage", usage.to_json()}};
}

nlohmann::json completion_chunk(Endpoint endpoint, const std::string& id, int64_t created, const std::string& model,
                                const std::string& text, bool first, const std::optional<std::string>& finish_reason) {
  nlohmann::json choice = {{"index", 0}, {"logprobs", nullptr},
                           {"finish_reason", finish_reason ? nlohmann::json(*finish_reason) : nlohmann::json(nullptr)}};
  if (endpoint == Endpoint::Chat) {
    nlohmann::json delta = nlohmann::json::object();
    if (first) delta["role"] = "assistant";
    if (!finish_reason) delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  return {{"id", id}, {"object", object_name(endpoint, true)}, {"created", created}, {"model", model}, {"choices", nlohmann::json::array({choice})}};
}

nlohmann::json usage_chunk(Endpoint endpoint, const std::string& id, int64_t created, const std::string& model, const Usage& usage) {
  return {{"id", id},       {"object", object_name(endpoint, true)}, {"created", created},
          {"model", model}, {"choices", nlohmann::json::array()},   {"usage", usage.to_json()}};
}

nlohmann::json model_list(const std::vector<std::string>& names, int64_t created) {
  auto data = nlohmann::json::array();
  for (const auto& n : names) data.push_back({{"id", n}, {"object", "model"}, {"created", created}, {"owned_by", "eesched"}});
  return {{"object", "list"}, {"data", data}};
}

}  // namespace eesched::gateway
