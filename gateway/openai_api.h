#pragma once
// The OpenAI API's shapes, without HTTP: requests of /v1/chat/completions and /v1/completions
// parsed and validated into one typed request (an ApiError naming the field otherwise), and the
// JSON the API answers with: completions, stream chunks, the model list, errors. Field names and
// semantics follow https://platform.openai.com/docs/api-reference (chat, completions, errors).
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/generation.h"
#include "data/task.h"
#include "runtime/chat_template.h"

namespace eesched::gateway {

// An error in the API's shape: {"error": {"message", "type", "param", "code"}} with its HTTP status.
struct ApiError : std::runtime_error {
  int status;
  std::string type;   // invalid_request_error, authentication_error, not_found_error, server_error, ...
  std::string param;  // the request field at fault, or empty
  std::string code;   // e.g. invalid_api_key, model_not_found; or empty

  ApiError(int status, std::string type, const std::string& message, std::string param = "", std::string code = "");
  nlohmann::json to_json() const;
};

ApiError bad_request(const std::string& message, const std::string& param);

enum class Endpoint { Chat, Completion };

struct CompletionRequest {
  Endpoint endpoint = Endpoint::Chat;
  std::string model;
  std::vector<runtime::ChatMessage> messages;  // chat
  std::string prompt;                          // completions
  data::GenerationParams generation;           // max_tokens, temperature, top_p, seed (stop ids: set by the gateway)
  std::vector<std::string> stop;               // stop strings, matched on the decrypted text
  bool stream = false;
  bool include_usage = false;                  // stream_options.include_usage
  // The eesched extension: {"eesched": {"quality": "tolerant", "max_ppl_ratio": 1.05, "arm": "kv",
  // "ignore_eos": true}}. ignore_eos (as llama.cpp's server has it) generates max_tokens tokens
  // whatever the model says: for benchmarks.
  data::Quality quality = data::Quality::Exact;
  double max_ppl_ratio = data::kDefaultMaxPplRatio;
  std::string arm;
  bool ignore_eos = false;
};

// `default_max_tokens` applies when the request names neither max_tokens nor max_completion_tokens.
// Throws ApiError(400) naming the field; unknown fields are ignored, as the API does.
CompletionRequest parse_completion_request(const std::string& body, Endpoint endpoint, int64_t default_max_tokens);

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  nlohmann::json to_json() const;
};

// The whole answer (stream: false).
nlohmann::json completion_response(Endpoint endpoint, const std::string& id, int64_t created, const std::string& model,
                                   const std::string& text, const std::string& finish_reason, const Usage& usage);

// One stream chunk: a piece of text (the chat's first chunk also carries the role), or the last
// chunk with its finish_reason (text empty).
nlohmann::json completion_chunk(Endpoint endpoint, const std::string& id, int64_t created, const std::string& model,
                                const std::string& text, bool first, const std::optional<std::string>& finish_reason);
// The chunk with no choice and the usage (stream_options.include_usage).
nlohmann::json usage_chunk(Endpoint endpoint, const std::string& id, int64_t created, const std::string& model, const Usage& usage);

// GET /v1/models.
nlohmann::json model_list(const std::vector<std::string>& names, int64_t created);

}  // namespace eesched::gateway
