#include "gateway/bench_serve.h"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace eesched::gateway {
namespace {

using Clock = std::chrono::steady_clock;
double ms_between(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double, std::milli>(b - a).count(); }

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double pos = p * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(pos));
  const auto hi = std::min(v.size() - 1, lo + 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

// Plain English words; the prompt's length is calibrated in tokens with the server's own count.
constexpr const char* kWords[] = {"the", "people", "of", "this", "nation", "have", "seen", "many", "years", "of",
                                  "work", "and", "hope", "while", "their", "land", "grew", "strong", "and", "free"};

std::string words(int64_t n, int salt) {
  std::string s;
  for (int64_t i = 0; i < n; ++i) {
    if (i) s += ' ';
    s += kWords[static_cast<std::size_t>((i * 7 + salt) % static_cast<int64_t>(std::size(kWords)))];
  }
  return s;
}

struct RequestResult {
  bool ok = false;
  std::string error;
  double ttft_ms = 0, e2e_ms = 0;
  std::vector<double> itl_ms;
  int64_t prompt_tokens = 0, output_tokens = 0;
};

struct Url {
  std::string scheme_host_port;
  std::string base_path;  // "" or "/prefix"
};

Url parse_url(const std::string& url) {
  const auto scheme = url.find("://");
  if (scheme == std::string::npos) throw std::runtime_error("bench-serve: --url must look like http://HOST:PORT, got '" + url + "'");
  const auto path = url.find('/', scheme + 3);
  Url u{url.substr(0, path), path == std::string::npos ? "" : url.substr(path)};
  while (!u.base_path.empty() && u.base_path.back() == '/') u.base_path.pop_back();
  if (u.base_path.size() >= 3 && u.base_path.compare(u.base_path.size() - 3, 3, "/v1") == 0) u.base_path.resize(u.base_path.size() - 3);
  return u;
}

// One streamed completion, timed from the client's side.
RequestResult stream_one(const BenchServeOptions& o, const Url& url, const std::string& prompt, int64_t max_tokens) {
  RequestResult r;
  httplib::Client client(url.scheme_host_port);
  client.set_read_timeout(static_cast<time_t>(o.timeout_s), 0);
  client.set_connection_timeout(10, 0);
  httplib::Headers headers;
  if (!o.api_key.empty()) headers.emplace("Authorization", "Bearer " + o.api_key);
  const nlohmann::json body{{"model", o.model},
                            {"prompt", prompt},
                            {"max_tokens", max_tokens},
                            {"temperature", 0},
                            {"stream", true},
                            {"stream_options", {{"include_usage", true}}},
                            {"eesched", {{"ignore_eos", true}}}};
  std::string buffer, error_body;
  std::optional<Clock::time_point> last;
  const auto start = Clock::now();
  int status = 0;
  httplib::Request req;
  req.method = "POST";
  req.path = url.base_path + "/v1/completions";
  req.headers = headers;
  req.headers.emplace("Content-Type", "application/json");
  req.body = body.dump();
  req.response_handler = [&](const httplib::Response& res) {
    status = res.status;
    return true;
  };
  req.content_receiver = [&](const char* data, std::size_t n, uint64_t, uint64_t) {
    if (status != 200) {
      error_body.append(data, n);
      return true;
    }
    buffer.append(data, n);
    std::size_t end;
    while ((end = buffer.find("\n\n")) != std::string::npos) {
      const std::string event = buffer.substr(0, end);
      buffer.erase(0, end + 2);
      if (event.rfind("data: ", 0) != 0 || event == "data: [DONE]") continue;
      const auto j = nlohmann::json::parse(event.substr(6), nullptr, false);
      if (j.is_discarded()) continue;
      if (j.contains("error")) {
        r.error = j["error"].value("message", "error event");
        continue;
      }
      if (j.contains("usage") && j["usage"].is_object()) {
        r.prompt_tokens = j["usage"].value("prompt_tokens", int64_t{0});
        r.output_tokens = j["usage"].value("completion_tokens", int64_t{0});
      }
      if (!j.contains("choices") || j["choices"].empty()) continue;
      const auto& c = j["choices"][0];
      const std::string text = c.contains("text") && c["text"].is_string() ? c["text"].get<std::string>() : "";
      if (text.empty()) continue;
      const auto now = Clock::now();
      if (!last) r.ttft_ms = ms_between(start, now);
      else r.itl_ms.push_back(ms_between(*last, now));
      last = now;
    }
    return true;
  };
  const auto res = client.send(req);
  r.e2e_ms = ms_between(start, Clock::now());
  if (!res) {
    r.error = "no answer from " + url.scheme_host_port + ": " + httplib::to_string(res.error());
  } else if (status != 200) {
    const auto j = nlohmann::json::parse(error_body, nullptr, false);
    r.error = "HTTP " + std::to_string(status) + ": " +
              (!j.is_discarded() && j.contains("error") ? j["error"].value("message", error_body) : error_body);
  } else if (r.error.empty() && !last) {
    r.error = "the stream carried no text";
  }
  r.ok = r.error.empty();
  return r;
}

}  // namespace

std::vector<BenchServeLevel> bench_serve(const BenchServeOptions& o) {
  if (o.model.empty()) throw std::runtime_error("bench-serve: --model is required");
  const auto url = parse_url(o.url);
  const auto say = [&](const std::string& s) {
    if (o.progress) o.progress(s);
  };
  // Calibrate: how many tokens the server counts for a prompt of 64 words.
  const auto probe = stream_one(o, url, words(64, 0), 1);
  if (!probe.ok) throw std::runtime_error("bench-serve: the first request failed: " + probe.error);
  const double tokens_per_word = probe.prompt_tokens > 0 ? static_cast<double>(probe.prompt_tokens) / 64.0 : 1.0;
  const auto n_words = std::max<int64_t>(1, std::llround(static_cast<double>(o.prompt_tokens) / tokens_per_word));
  say("prompt of " + std::to_string(n_words) + " words (~" + std::to_string(o.prompt_tokens) + " tokens), " +
      std::to_string(o.output_tokens) + " output tokens");
  // Warm-up: the worker prepares its arm on first use.
  stream_one(o, url, words(n_words, 1), std::min<int64_t>(4, o.output_tokens));

  std::vector<BenchServeLevel> levels;
  int salt = 2;
  for (const int c : o.concurrency) {
    if (c < 1) throw std::runtime_error("bench-serve: a concurrency level must be at least 1");
    const int total = o.requests > 0 ? o.requests : std::max(8, 4 * c);
    std::vector<RequestResult> results(static_cast<std::size_t>(total));
    std::atomic<int> next{0};
    const int base_salt = salt;
    salt += total;
    const auto start = Clock::now();
    std::vector<std::thread> clients;
    for (int t = 0; t < c; ++t)
      clients.emplace_back([&] {
        for (int i; (i = next++) < total;)
          results[static_cast<std::size_t>(i)] = stream_one(o, url, words(n_words, base_salt + i), o.output_tokens);
      });
    for (auto& t : clients) t.join();
    BenchServeLevel l;
    l.concurrency = c;
    l.requests = total;
    l.duration_s = ms_between(start, Clock::now()) / 1000.0;
    std::vector<double> ttft, tpot, itl;
    int64_t out_tokens = 0, in_tokens = 0;
    for (const auto& r : results) {
      if (!r.ok) {
        ++l.failed;
        if (l.first_error.empty()) l.first_error = r.error;
        continue;
      }
      ttft.push_back(r.ttft_ms);
      if (r.output_tokens > 1) tpot.push_back((r.e2e_ms - r.ttft_ms) / static_cast<double>(r.output_tokens - 1));
      itl.insert(itl.end(), r.itl_ms.begin(), r.itl_ms.end());
      out_tokens += r.output_tokens;
      in_tokens += r.prompt_tokens;
    }
    const int ok = total - l.failed;
    l.request_throughput = ok / l.duration_s;
    l.output_tokens_per_s = static_cast<double>(out_tokens) / l.duration_s;
    l.mean_prompt_tokens = ok ? static_cast<double>(in_tokens) / ok : 0;
    l.mean_output_tokens = ok ? static_cast<double>(out_tokens) / ok : 0;
    l.ttft_ms_p50 = percentile(ttft, 0.5), l.ttft_ms_p99 = percentile(ttft, 0.99);
    l.tpot_ms_p50 = percentile(tpot, 0.5), l.tpot_ms_p99 = percentile(tpot, 0.99);
    l.itl_ms_p50 = percentile(itl, 0.5), l.itl_ms_p99 = percentile(itl, 0.99);
    say("concurrency " + std::to_string(c) + ": " + std::to_string(ok) + "/" + std::to_string(total) + " requests in " +
        std::to_string(l.duration_s) + " s");
    levels.push_back(l);
  }
  return levels;
}

nlohmann::json to_json(const std::vector<BenchServeLevel>& levels) {
  auto arr = nlohmann::json::array();
  for (const auto& l : levels)
    arr.push_back({{"concurrency", l.concurrency},
                   {"requests", l.requests},
                   {"failed", l.failed},
                   {"duration_s", l.duration_s},
                   {"request_throughput", l.request_throughput},
                   {"output_tokens_per_s", l.output_tokens_per_s},
                   {"mean_prompt_tokens", l.mean_prompt_tokens},
                   {"mean_output_tokens", l.mean_output_tokens},
                   {"ttft_ms_p50", l.ttft_ms_p50},
                   {"ttft_ms_p99", l.ttft_ms_p99},
                   {"tpot_ms_p50", l.tpot_ms_p50},
                   {"tpot_ms_p99", l.tpot_ms_p99},
                   {"itl_ms_p50", l.itl_ms_p50},
                   {"itl_ms_p99", l.itl_ms_p99},
                   {"first_error", l.first_error}});
  return {{"levels", arr}};
}

}  // namespace eesched::gateway
