#include "gateway/gateway.h"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <map>
#include <optional>
#include <stdexcept>
#include <thread>

#include "ee/codec.h"
#include "ee/key.h"
#include "gateway/openai_api.h"
#include "gateway/text_stream.h"
#include "net/auth.h"
#include "net/blocking_client.h"
#include "net/metrics.h"
#include "net/task_client.h"
#include "runtime/chat_prompt.h"
#include "runtime/tokenizer.h"

namespace eesched::gateway {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

int64_t unix_time() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

constexpr std::size_t kMaxBodyBytes = std::size_t{8} << 20;

// Metric names (docs/gateway.md lists them).
constexpr const char* kRequests = "eesched_gateway_requests_total";
constexpr const char* kRunning = "eesched_gateway_requests_running";
constexpr const char* kPromptTokens = "eesched_gateway_prompt_tokens_total";
constexpr const char* kGenerationTokens = "eesched_gateway_generation_tokens_total";
constexpr const char* kTtft = "eesched_gateway_time_to_first_token_seconds";
constexpr const char* kTpot = "eesched_gateway_time_per_output_token_seconds";
constexpr const char* kLatency = "eesched_gateway_e2e_request_latency_seconds";
constexpr const char* kCancelled = "eesched_gateway_cancelled_total";

struct Model {
  ServedModel served;
  runtime::Tokenizer tokenizer;
};

// The request as the coordinator gets it, and what the gateway keeps to read the answer.
struct Prepared {
  const Model* model = nullptr;
  net::TaskRequest task;
  int64_t prompt_tokens = 0;
  std::vector<std::string> stop_strings;
};

struct Answer {
  std::string text;
  std::string finish_reason;
  Usage usage;
  bool client_gone = false;
};

// Where the coordinator's refusal or silence maps in HTTP (docs/gateway.md).
ApiError upstream_error(const net::SubmitError& e, const std::string& model) {
  const std::string& c = e.code;
  if (c == net::codes::kNoWorker)
    return ApiError(503, "service_unavailable", "no worker holds model '" + model + "' under this key: " + e.what(), "model", "no_worker");
  if (c == net::codes::kOverloaded || c == net::codes::kShuttingDown) return ApiError(503, "service_unavailable", e.what(), "", c);
  if (c == net::codes::kBadMessage) return ApiError(400, "invalid_request_error", e.what());
  if (c == net::kSubmitTimeout) return ApiError(504, "timeout", e.what(), "", "timeout");
  if (c == net::kSubmitUnreachable) return ApiError(502, "bad_gateway", e.what(), "", "coordinator_unreachable");
  return ApiError(502, "bad_gateway", e.what(), "", c);
}

bool constant_time_equal(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (std::size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i % std::max<std::size_t>(1, b.size())]);
  return diff == 0;
}

std::string sse(const nlohmann::json& j) { return "data: " + j.dump() + "\n\n"; }

}  // namespace

struct Gateway::Impl {
  using Labels = net::Labels;

  GatewayOptions options;
  ee::Key key;
  ee::Codec codec;
  std::map<std::string, Model> models;
  httplib::Server server;
  net::Metrics metrics;
  std::atomic<int64_t> running{0};
  int64_t started_at = unix_time();

  explicit Impl(GatewayOptions o) : options(std::move(o)), key(ee::Key::load(options.key)), codec(key) {
    if (options.models.empty()) throw std::runtime_error("serve: give at least one --model NAME=TOKENIZER_DIR");
    for (const auto& m : options.models) {
      if (models.count(m.name)) throw std::runtime_error("serve: model '" + m.name + "' is named twice");
      auto tokenizer = runtime::Tokenizer::load(m.tokenizer);
      // The key permutes the model's whole embedding, which real checkpoints pad past the tokenizer.
      if (tokenizer.vocab_size() > codec.vocab_size())
        throw std::runtime_error("serve: the tokenizer of '" + m.name + "' has " + std::to_string(tokenizer.vocab_size()) +
                                 " tokens, more than the key's vocabulary of " + std::to_string(codec.vocab_size()) +
                                 ": not the tokenizer this key was made for");
      models.emplace(m.name, Model{m, std::move(tokenizer)});
    }
    declare_metrics();
    routes();
  }

  void declare_metrics() {
    using K = net::Metrics::Kind;
    metrics.declare(kRequests, K::Counter, "HTTP requests answered, by endpoint and status code");
    metrics.declare(kRunning, K::Gauge, "completion requests being answered now");
    metrics.declare(kPromptTokens, K::Counter, "prompt tokens submitted, by model");
    metrics.declare(kGenerationTokens, K::Counter, "tokens generated, by model");
    metrics.declare(kCancelled, K::Counter, "tasks cancelled upstream, by reason (stop string, client gone)");
    metrics.declare(kTtft, K::Histogram, "time from the request to its first token", net::Metrics::latency_buckets());
    metrics.declare(kTpot, K::Histogram, "mean time per output token after the first, per request",
                    {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5});
    metrics.declare(kLatency, K::Histogram, "time from the request to its last byte", net::Metrics::latency_buckets());
  }

  void answer_error(httplib::Response& res, const ApiError& e) {
    res.status = e.status;
    res.set_content(e.to_json().dump(), "application/json");
  }

  void authorize(const httplib::Request& req) const {
    if (options.api_key.empty()) return;
    const auto header = req.get_header_value("Authorization");
    const std::string prefix = "Bearer ";
    if (header.compare(0, prefix.size(), prefix) != 0 || !constant_time_equal(header.substr(prefix.size()), options.api_key))
      throw ApiError(401, "invalid_request_error", "Incorrect API key provided.", "", "invalid_api_key");
  }

  // Renders, tokenizes and encrypts: from here on only encrypted ids exist for the request.
  Prepared prepare(const CompletionRequest& r) const {
    const auto it = models.find(r.model);
    if (it == models.end())
      throw ApiError(404, "invalid_request_error", "The model '" + r.model + "' does not exist (GET /v1/models lists the served ones).",
                     "model", "model_not_found");
    const Model& m = it->second;
    Prepared p;
    p.model = &m;
    std::vector<int64_t> ids, stops{m.tokenizer.eos_id()};
    if (r.endpoint == Endpoint::Chat) {
      runtime::ChatPrompt chat;
      try {
        chat = runtime::render_chat_prompt(m.tokenizer, r.messages, m.served.chat_template);
      } catch (const std::exception& e) {
        throw bad_request(e.what(), "messages");
      }
      ids = std::move(chat.ids);
      stops.insert(stops.end(), chat.stop_ids.begin(), chat.stop_ids.end());
      if (!r.ignore_eos) p.stop_strings = chat.stop_strings;
    } else {
      ids = m.tokenizer.encode(r.prompt);
    }
    if (ids.empty()) throw bad_request("the prompt encodes to no token", r.endpoint == Endpoint::Chat ? "messages" : "prompt");
    p.stop_strings.insert(p.stop_strings.end(), r.stop.begin(), r.stop.end());
    p.prompt_tokens = static_cast<int64_t>(ids.size());
    auto& t = p.task;
    t.model = r.model;
    t.key_fingerprint = key.fingerprint();
    t.prompt_ids = {codec.encrypt(ids)};
    t.generation = r.generation;
    t.generation.stop_ids = r.ignore_eos ? std::vector<int64_t>{} : codec.encrypt(stops);
    t.quality = r.quality;
    t.max_ppl_ratio = r.max_ppl_ratio;
    t.arm = r.arm;
    return p;
  }

  // Runs the task, calling `emit` with each piece of final text as tokens arrive (emit returns
  // false once the client is gone: the task is then cancelled upstream). Throws ApiError.
  Answer run(const Prepared& p, const std::function<bool(const std::string&)>& emit, Clock::time_point start) {
    const Model& m = *p.model;
    TextStream text(m.tokenizer, p.stop_strings);
    Answer a;
    std::vector<int64_t> received;  // encrypted ids of the answer, in order, each once
    std::optional<double> ttft_s;
    auto cancel = std::make_shared<std::atomic<bool>>(false);
    std::string cancel_reason;
    const auto take = [&](const std::vector<int64_t>& row, int64_t offset) {
      std::vector<int64_t> fresh;
      for (std::size_t i = 0; i < row.size(); ++i) {
        const auto pos = offset + static_cast<int64_t>(i);
        if (pos < static_cast<int64_t>(received.size())) continue;  // a task restarted with the coordinator repeats
        if (pos > static_cast<int64_t>(received.size())) break;     // a gap: the final Result fills it
        received.push_back(row[i]);
        fresh.push_back(row[i]);
      }
      if (fresh.empty() || text.stopped()) return;
      if (!ttft_s) ttft_s = seconds_since(start);
      const auto piece = text.push(codec.decrypt(fresh));
      if (!piece.empty() && emit && !a.client_gone && !emit(piece)) {
        a.client_gone = true;
        cancel_reason = "client_gone";
        cancel->store(true);
      }
      if (text.stopped() && !cancel->load()) {
        cancel_reason = "stop_string";
        cancel->store(true);
      }
    };

    net::SubmitOptions o;
    o.timeout = options.timeout;
    o.cancel = cancel;
    o.on_tokens = [&](const net::Tokens& t) {
      if (!t.tokens.empty() && !t.offsets.empty()) take(t.tokens.front(), t.offsets.front());
    };
    net::Result res;
    try {
      res = net::submit_and_wait(options.coordinator, p.task, o);
    } catch (const net::SubmitError& e) {
      throw upstream_error(e, p.task.model);
    }
    if (!cancel_reason.empty()) metrics.add(kCancelled, {{"reason", cancel_reason}});
    if (a.client_gone) return a;
    if (res.status == "done" && res.report.ok) {
      if (!res.report.tokens.empty()) take(res.report.tokens.front(), 0);
    } else if (!text.stopped()) {
      throw ApiError(500, "server_error", "the task " + res.status + (res.report.error.empty() ? "" : ": " + res.report.error));
    }
    const auto tail = text.finish();
    if (!tail.empty() && emit && !emit(tail)) a.client_gone = true;
    a.text = text.text();
    a.usage = {p.prompt_tokens, static_cast<int64_t>(received.size())};
    a.finish_reason = text.stopped() || a.usage.completion_tokens < p.task.generation.max_new_tokens ? "stop" : "length";

    const Labels model_label{{"model", p.task.model}};
    metrics.add(kPromptTokens, model_label, static_cast<double>(a.usage.prompt_tokens));
    metrics.add(kGenerationTokens, model_label, static_cast<double>(a.usage.completion_tokens));
    if (ttft_s) {
      metrics.observe(kTtft, model_label, *ttft_s);
      if (a.usage.completion_tokens > 1)
        metrics.observe(kTpot, model_label, (seconds_since(start) - *ttft_s) / static_cast<double>(a.usage.completion_tokens - 1));
    }
    return a;
  }

  void completion(const httplib::Request& req, httplib::Response& res, Endpoint endpoint, const char* path) {
    const auto start = Clock::now();
    ++running;
    metrics.set(kRunning, {}, static_cast<double>(running.load()));
    const auto done = [this, path, start](int status) {
      --running;
      metrics.set(kRunning, {}, static_cast<double>(running.load()));
      metrics.add(kRequests, {{"endpoint", path}, {"status", std::to_string(status)}});
      metrics.observe(kLatency, {{"endpoint", path}}, seconds_since(start));
    };
    try {
      authorize(req);
      const auto request = parse_completion_request(req.body, endpoint, options.default_max_tokens);
      auto prepared = std::make_shared<Prepared>(prepare(request));
      const std::string id = (endpoint == Endpoint::Chat ? "chatcmpl-" : "cmpl-") + net::make_nonce().substr(0, 24);
      const int64_t created = unix_time();
      prepared->task.request_id = id;
      if (!request.stream) {
        const auto a = run(*prepared, nullptr, start);
        res.set_content(completion_response(endpoint, id, created, request.model, a.text, a.finish_reason, a.usage).dump(),
                        "application/json");
        return done(200);
      }
      // Streamed: the provider runs the task on this server thread, writing each piece as an
      // event. The releaser counts a request whose client left before the provider ran.
      auto finished = std::make_shared<std::atomic<bool>>(false);
      const auto finish = [done, finished](int status) {
        if (!finished->exchange(true)) done(status);
      };
      res.set_header("Cache-Control", "no-cache");
      res.set_chunked_content_provider(
          "text/event-stream",
          [this, prepared, request, id, created, endpoint, start, finish](std::size_t, httplib::DataSink& sink) {
            bool first = true;
            const auto write = [&sink](const std::string& s) { return sink.is_writable() && sink.write(s.data(), s.size()); };
            const auto emit = [&](const std::string& piece) {
              const bool ok = write(sse(completion_chunk(endpoint, id, created, request.model, piece, first, std::nullopt)));
              first = false;
              return ok;
            };
            int status = 200;
            try {
              const auto a = run(*prepared, emit, start);
              if (a.client_gone) {
                finish(499);  // nginx's "client closed request"
                return false;
              }
              if (first) emit("");  // the chat's role chunk, even for an empty answer
              write(sse(completion_chunk(endpoint, id, created, request.model, "", false, a.finish_reason)));
              if (request.include_usage) write(sse(usage_chunk(endpoint, id, created, request.model, a.usage)));
            } catch (const ApiError& e) {
              // The status line is gone: the error travels as an event, which OpenAI clients raise.
              status = e.status;
              write(sse(e.to_json()));
            } catch (const std::exception& e) {
              status = 500;
              write(sse(ApiError(500, "server_error", e.what()).to_json()));
            }
            write("data: [DONE]\n\n");
            sink.done();
            finish(status);
            return true;
          },
          [finish](bool) { finish(499); });
    } catch (const ApiError& e) {
      answer_error(res, e);
      done(e.status);
    } catch (const std::exception& e) {
      answer_error(res, ApiError(500, "server_error", e.what()));
      done(500);
    }
  }

  void routes() {
    server.set_payload_max_length(kMaxBodyBytes);
    const int threads = std::max(1, options.http_threads);
    server.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<std::size_t>(threads)); };
    server.Post("/v1/chat/completions", [this](const httplib::Request& q, httplib::Response& r) { completion(q, r, Endpoint::Chat, "/v1/chat/completions"); });
    server.Post("/v1/completions", [this](const httplib::Request& q, httplib::Response& r) { completion(q, r, Endpoint::Completion, "/v1/completions"); });
    server.Get("/v1/models", [this](const httplib::Request& q, httplib::Response& r) {
      try {
        authorize(q);
        std::vector<std::string> names;
        for (const auto& [name, m] : models) names.push_back(name);
        r.set_content(model_list(names, started_at).dump(), "application/json");
      } catch (const ApiError& e) {
        answer_error(r, e);
      }
      metrics.add(kRequests, {{"endpoint", "/v1/models"}, {"status", std::to_string(r.status)}});
    });
    server.Get("/health", [this](const httplib::Request&, httplib::Response& r) {
      // Up when a live worker holds each served model under our key (the coordinator says which).
      try {
        const auto status = net::query_status(options.coordinator, std::chrono::milliseconds(2000));
        nlohmann::json workers = nlohmann::json::object();
        std::string missing;
        for (const auto& [name, m] : models) {
          int64_t n = 0;
          for (const auto& s : status.models)
            if (s.name == name && (s.key_fingerprint.empty() || s.key_fingerprint == key.fingerprint())) n += s.workers;
          workers[name] = n;
          if (n == 0) missing += (missing.empty() ? "" : ", ") + name;
        }
        nlohmann::json body{{"status", missing.empty() ? "ok" : "unavailable"}, {"workers", workers}};
        if (!missing.empty()) {
          r.status = 503;
          body["error"] = "no live worker holds " + missing;
        }
        r.set_content(body.dump(), "application/json");
      } catch (const std::exception& e) {
        r.status = 503;
        r.set_content(nlohmann::json{{"status", "unavailable"}, {"error", e.what()}}.dump(), "application/json");
      }
      metrics.add(kRequests, {{"endpoint", "/health"}, {"status", std::to_string(r.status)}});
    });
    server.Get("/metrics", [this](const httplib::Request&, httplib::Response& r) {
      r.set_content(metrics.render(), "text/plain; version=0.0.4");
    });
    server.set_error_handler([this](const httplib::Request& q, httplib::Response& r) {
      if (!r.body.empty()) return;  // a handler's own error
      if (r.status == 404) answer_error(r, ApiError(404, "invalid_request_error", "no such endpoint: " + q.method + " " + q.path, "", "unknown_url"));
      else if (r.status == 413) answer_error(r, ApiError(413, "invalid_request_error", "the request body is over 8 MiB"));
      else if (r.status == 405) answer_error(r, ApiError(405, "invalid_request_error", q.method + " is not allowed on " + q.path));
    });
    server.set_exception_handler([this](const httplib::Request&, httplib::Response& r, std::exception_ptr ep) {
      std::string what = "unknown error";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      spdlog::error("serve: {}", what);
      answer_error(r, ApiError(500, "server_error", what));
    });
  }
};

Gateway::Gateway(GatewayOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Gateway::~Gateway() = default;

int Gateway::bind() {
  auto& o = impl_->options;
  const int port = o.port == 0 ? impl_->server.bind_to_any_port(o.host) : (impl_->server.bind_to_port(o.host, o.port) ? o.port : -1);
  if (port <= 0) throw std::runtime_error("serve: cannot listen on " + o.host + ":" + std::to_string(o.port) + " (in use, or not an address here)");
  o.port = port;
  return port;
}

void Gateway::serve() { impl_->server.listen_after_bind(); }

void Gateway::stop() {
  // A stop() that comes before serve() has started its loop would be lost: wait for the loop.
  // (serve() returns at once when the socket was never bound.)
  for (int i = 0; i < 5000 && !impl_->server.is_running() && impl_->options.port > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  impl_->server.stop();
}

std::string Gateway::metrics_text() const { return impl_->metrics.render(); }

}  // namespace eesched::gateway
