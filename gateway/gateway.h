#pragma once
// The client side as a service: an OpenAI-compatible HTTP server (cpp-httplib) in front of a
// coordinator. It holds the key: requests are rendered with the model's chat template, tokenized
// and encrypted here; only encrypted ids and lengths go to the coordinator; the encrypted tokens
// that come back (streamed as workers produce them) are decrypted and detokenized here and sent
// as JSON or Server-Sent Events. Endpoints and error codes: docs/gateway.md.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "net/endpoint.h"

namespace eesched::gateway {

struct ServedModel {
  std::string name;                 // as workers registered the encrypted model, and as clients ask for it
  std::filesystem::path tokenizer;  // the plaintext model's tokenizer (file or directory)
  std::string chat_template;        // the family instead of detecting it ("plain", "llama3", ...); empty: detect
};

struct GatewayOptions {
  net::Endpoint coordinator;
  std::filesystem::path key;  // the client's EE key: never leaves this process
  std::vector<ServedModel> models;
  std::string host = "127.0.0.1";
  int port = 8080;                  // 0: any free port (bind() returns it)
  std::string api_key;              // when set, requests need "Authorization: Bearer <api_key>"
  std::chrono::milliseconds timeout{600000};  // per request, queueing and generation included
  int64_t default_max_tokens = 256;           // when a request names no max_tokens
  int http_threads = 64;                      // each open request (a stream included) holds one
};

class Gateway {
 public:
  // Loads the key and every tokenizer; a one-line error for a missing file, a tokenizer larger
  // than the key's vocabulary, or a model named twice.
  explicit Gateway(GatewayOptions options);
  ~Gateway();
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  int bind();    // binds host:port; returns the port. Throws when it cannot.
  void serve();  // answers requests until stop(); bind() first
  void stop();   // any thread

  std::string metrics_text() const;  // what GET /metrics answers

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace eesched::gateway
