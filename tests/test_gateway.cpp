// gateway/: the OpenAI API's request checks and response shapes, the streaming detokenizer with
// stop strings, the Prometheus text, and the gateway end to end: the official `openai` npm
// client against `eesched serve`'s server on loopback, a coordinator and two workers running the
// encrypted demo target, answers compared with local plaintext generation.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include <cstdio>
#include <regex>
#include <thread>

#include "gateway/gateway.h"
#include "gateway/openai_api.h"
#include "gateway/text_stream.h"
#include "net/metrics.h"
#include "runtime/chat_prompt.h"
#include "scheduler/metrics_endpoint.h"
#include "tests/daemon_fixtures.h"
#include "tests/tokenizers_dir.h"

namespace eesched {
namespace {

using ::testing::HasSubstr;
using gateway::ApiError;
using gateway::Endpoint;
using gateway::parse_completion_request;

// ---- requests --------------------------------------------------------------------------------

// The status and field an invalid body is refused with.
void expect_refused(const std::string& body, Endpoint e, int status, const std::string& param) {
  try {
    parse_completion_request(body, e, 16);
    ADD_FAILURE() << "accepted: " << body;
  } catch (const ApiError& err) {
    EXPECT_EQ(err.status, status) << body;
    EXPECT_EQ(err.param, param) << body << ": " << err.what();
    EXPECT_EQ(err.to_json()["error"]["param"], param.empty() ? nlohmann::json(nullptr) : nlohmann::json(param));
  }
}

TEST(OpenAiApi, ChatRequestsAreReadAsTheApiDefinesThem) {
  const auto r = parse_completion_request(
      R"({"model": "m", "messages": [{"role": "developer", "content": "be brief"},
          {"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}]}],
          "max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "seed": 42, "stop": ["a", "bc"], "stream": true,
          "stream_options": {"include_usage": true}, "n": 1, "user": "ignored",
          "eesched": {"quality": "tolerant", "max_ppl_ratio": 1.02, "arm": "kv", "ignore_eos": true}})",
      Endpoint::Chat, 16);
  EXPECT_EQ(r.model, "m");
  ASSERT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.messages[0].role, "system");  // developer is the API's newer name for it
  EXPECT_EQ(r.messages[1].content, "hi there");
  EXPECT_EQ(r.generation.max_new_tokens, 7);
  EXPECT_DOUBLE_EQ(r.generation.temperature, 0.5);
  EXPECT_DOUBLE_EQ(r.generation.top_p, 0.9);
  EXPECT_EQ(r.generation.seed, 42u);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"a", "bc"}));
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_EQ(r.quality, data::Quality::Tolerant);
  EXPECT_DOUBLE_EQ(r.max_ppl_ratio, 1.02);
  EXPECT_EQ(r.arm, "kv");
  EXPECT_TRUE(r.ignore_eos);

  const auto c = parse_completion_request(R"({"model": "m", "prompt": "once", "max_completion_tokens": 3, "stop": "x"})", Endpoint::Completion, 16);
  EXPECT_EQ(c.prompt, "once");
  EXPECT_EQ(c.generation.max_new_tokens, 3);
  EXPECT_EQ(c.stop, std::vector<std::string>{"x"});
  EXPECT_FALSE(c.stream);
  EXPECT_EQ(parse_completion_request(R"({"model": "m", "prompt": "p"})", Endpoint::Completion, 16).generation.max_new_tokens, 16);
}

TEST(OpenAiApi, BadRequestsNameTheField) {
  const auto chat = Endpoint::Chat;
  expect_refused("{not json", chat, 400, "");
  expect_refused("[1]", chat, 400, "");
  expect_refused(R"({"messages": [{"role": "user", "content": "x"}]})", chat, 400, "model");
  expect_refused(R"({"model": "m"})", chat, 400, "messages");
  expect_refused(R"({"model": "m", "messages": []})", chat, 400, "messages");
  expect_refused(R"({"model": "m", "messages": [{"content": "x"}]})", chat, 400, "messages[0].role");
  expect_refused(R"({"model": "m", "messages": [{"role": "tool", "content": "x"}]})", chat, 400, "messages[0].role");
  expect_refused(R"({"model": "m", "messages": [{"role": "user", "content": 5}]})", chat, 400, "messages[0].content");
  const std::string ok = R"("model": "m", "messages": [{"role": "user", "content": "x"}])";
  expect_refused("{" + ok + R"(, "temperature": 2.5})", chat, 400, "temperature");
  expect_refused("{" + ok + R"(, "temperature": "hot"})", chat, 400, "temperature");
  expect_refused("{" + ok + R"(, "top_p": 1.5})", chat, 400, "top_p");
  expect_refused("{" + ok + R"(, "max_tokens": 0})", chat, 400, "max_tokens");
  expect_refused("{" + ok + R"(, "max_tokens": 2.5})", chat, 400, "max_tokens");
  expect_refused("{" + ok + R"(, "n": 2})", chat, 400, "n");
  expect_refused("{" + ok + R"(, "stop": ["a", "b", "c", "d", "e"]})", chat, 400, "stop");
  expect_refused("{" + ok + R"(, "stop": [""]})", chat, 400, "stop");
  expect_refused("{" + ok + R"(, "stream": "yes"})", chat, 400, "stream");
  expect_refused("{" + ok + R"(, "stream_options": {"include_usage": true}})", chat, 400, "stream_options");
  expect_refused("{" + ok + R"(, "eesched": {"quality": "sloppy"}})", chat, 400, "eesched.quality");
  expect_refused("{" + ok + R"(, "eesched": {"max_ppl_ratio": 0.5}})", chat, 400, "eesched.max_ppl_ratio");
  expect_refused("{" + ok + R"(, "eesched": {"ignore_eos": 1}})", chat, 400, "eesched.ignore_eos");
  expect_refused(R"({"model": "m"})", Endpoint::Completion, 400, "prompt");
  expect_refused(R"({"model": "m", "prompt": ["a", "b"]})", Endpoint::Completion, 400, "prompt");
}

TEST(OpenAiApi, ResponsesHaveTheApisShape) {
  const gateway::Usage u{5, 3};
  const auto chat = gateway::completion_response(Endpoint::Chat, "chatcmpl-1", 100, "m", "hello", "stop", u);
  EXPECT_EQ(chat["object"], "chat.completion");
  EXPECT_EQ(chat["choices"][0]["message"]["content"], "hello");
  EXPECT_EQ(chat["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(chat["usage"]["total_tokens"], 8);
  const auto text = gateway::completion_response(Endpoint::Completion, "cmpl-1", 100, "m", "hello", "length", u);
  EXPECT_EQ(text["object"], "text_completion");
  EXPECT_EQ(text["choices"][0]["text"], "hello");
  EXPECT_EQ(text["choices"][0]["finish_reason"], "length");
  const auto first = gateway::completion_chunk(Endpoint::Chat, "c", 1, "m", "he", true, std::nullopt);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"], (nlohmann::json{{"role", "assistant"}, {"content", "he"}}));
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  const auto last = gateway::completion_chunk(Endpoint::Chat, "c", 1, "m", "", false, "stop");
  EXPECT_EQ(last["choices"][0]["delta"], nlohmann::json::object());
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(gateway::usage_chunk(Endpoint::Chat, "c", 1, "m", u)["choices"].empty());
  EXPECT_EQ(gateway::model_list({"a", "b"}, 1)["data"][1]["id"], "b");
}

// ---- streamed text -----------------------------------------------------------------------------

// Feeds ids one at a time; returns the pieces released.
std::vector<std::string> stream_one_by_one(gateway::TextStream& s, const std::vector<int64_t>& ids) {
  std::vector<std::string> pieces;
  for (const auto id : ids) pieces.push_back(s.push({id}));
  pieces.push_back(s.finish());
  return pieces;
}

std::string concat(const std::vector<std::string>& pieces) {
  std::string s;
  for (const auto& p : pieces) s += p;
  return s;
}

TEST(TextStream, ReleasesExactlyTheOneShotDecodeAndCutsAtTheFirstStopString) {
  const auto tokenizer = runtime::Tokenizer::load(testing::tokenizer_path());
  const std::string text = "The sea was calm. The ship sailed on, and the crew sang until the night came.";
  const auto ids = tokenizer.encode(text, false);
  const auto full = tokenizer.decode(ids);
  {
    gateway::TextStream s(tokenizer, {});
    const auto pieces = stream_one_by_one(s, ids);
    EXPECT_EQ(concat(pieces), full);
    EXPECT_FALSE(s.stopped());
    EXPECT_EQ(s.ids(), ids);
  }
  for (const std::string stop : {"ship", "crew sang", "the night", "."}) {
    SCOPED_TRACE(stop);
    gateway::TextStream s(tokenizer, {"zzz", stop});
    const auto pieces = stream_one_by_one(s, ids);
    EXPECT_EQ(concat(pieces), full.substr(0, full.find(stop)));
    EXPECT_TRUE(s.stopped());  // (released text is never taken back: the equality above says no piece passed the cut)
  }
  // Absent stop strings change nothing; a stop string's prefix at the very end is released at finish().
  gateway::TextStream s(tokenizer, {"came.!"});
  EXPECT_EQ(concat(stream_one_by_one(s, ids)), full);
  EXPECT_FALSE(s.stopped());
}

TEST(TextStream, NeverReleasesHalfACharacter) {
  const auto dir = testing::tokenizers_dir() / "llama3";
  if (!std::filesystem::exists(dir / "tokenizer.json")) GTEST_SKIP() << "real tokenizers not fetched (tools/fetch-tokenizers.sh)";
  const auto tokenizer = runtime::Tokenizer::load(dir);
  // Byte-level BPE splits rare characters over several tokens.
  const std::string text = "naïve café, 日本語の文章, emoji 🦀🧪 and Ελληνικά";
  const auto ids = tokenizer.encode(text, false);
  gateway::TextStream s(tokenizer, {"Ελλ"});
  const auto pieces = stream_one_by_one(s, ids);
  for (const auto& p : pieces) EXPECT_EQ(p.find("\xEF\xBF\xBD"), std::string::npos) << "a piece ends mid-character: " << p;
  EXPECT_EQ(concat(pieces), text.substr(0, text.find("Ελλ")));
  EXPECT_TRUE(s.stopped());
}

// ---- metrics -----------------------------------------------------------------------------------

TEST(Metrics, RendersThePrometheusTextFormat) {
  net::Metrics m;
  m.declare("eesched_x_total", net::Metrics::Kind::Counter, "things");
  m.declare("eesched_idle_total", net::Metrics::Kind::Counter, "never touched");
  m.declare("eesched_q", net::Metrics::Kind::Gauge, "depth");
  m.declare("eesched_t_seconds", net::Metrics::Kind::Histogram, "time", {0.1, 1.0});
  m.add("eesched_x_total", {{"status", "200"}});
  m.add("eesched_x_total", {{"status", "200"}}, 2);
  m.add("eesched_x_total", {{"status", "a\"b\\c\nd"}});
  m.set("eesched_q", {}, 4);
  for (const double v : {0.05, 0.1, 0.5, 3.0}) m.observe("eesched_t_seconds", {{"model", "m"}}, v);
  const auto text = m.render();
  EXPECT_THAT(text, HasSubstr("# HELP eesched_x_total things\n# TYPE eesched_x_total counter\n"));
  EXPECT_THAT(text, HasSubstr("eesched_x_total{status=\"200\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("eesched_x_total{status=\"a\\\"b\\\\c\\nd\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("eesched_idle_total 0\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE eesched_q gauge\neesched_q 4\n"));
  // Buckets are cumulative and inclusive (le); +Inf equals the count.
  EXPECT_THAT(text, HasSubstr("eesched_t_seconds_bucket{model=\"m\",le=\"0.1\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("eesched_t_seconds_bucket{model=\"m\",le=\"1\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("eesched_t_seconds_bucket{model=\"m\",le=\"+Inf\"} 4\n"));
  EXPECT_THAT(text, HasSubstr("eesched_t_seconds_sum{model=\"m\"} 3.65\n"));
  EXPECT_THAT(text, HasSubstr("eesched_t_seconds_count{model=\"m\"} 4\n"));
  EXPECT_THROW(m.add("eesched_undeclared", {}), std::logic_error);
  EXPECT_THROW(m.observe("eesched_q", {}, 1), std::logic_error);
}

// ---- end to end --------------------------------------------------------------------------------

// The value of one series in a Prometheus text page (-1 when absent).
double metric_value(const std::string& page, const std::string& series) {
  const auto at = page.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(page.substr(at + series.size() + 2));
}

// `eesched serve`'s server in this process, in front of a coordinator and two workers.
class GatewayEndToEnd : public ::testing::Test {
 protected:
  static constexpr const char* kApiKey = "sk-test-5e3f";

  void SetUp() override {
    if (std::system("node --version >/dev/null 2>&1") != 0) GTEST_SKIP() << "node is not installed (scripts/setup.sh installs it)";
    const auto pkg = npm_cache() / "node_modules" / "openai" / "package.json";
    if (!std::filesystem::exists(pkg)) GTEST_SKIP() << "the openai npm package is not fetched (tools/fetch-openai.sh; make test runs it)";
    coordinator_ = std::make_unique<testing::LocalCoordinator>(d_.dir.path());
    for (const char* name : {"w1", "w2"}) workers_.push_back(std::make_unique<testing::LocalWorker>(d_.worker(coordinator_->at(), name)));
    coordinator_->await_workers(2);
    d_.key.save(d_.dir / "client.eekey", false);
    gateway::GatewayOptions o;
    o.coordinator = coordinator_->at();
    o.key = d_.dir / "client.eekey";
    // "ghost" has a tokenizer here but no worker holds it: 503.
    o.models = {{"target", testing::tokenizer_path(), ""}, {"ghost", testing::tokenizer_path(), ""}};
    o.port = 0;
    o.api_key = kApiKey;
    o.timeout = std::chrono::milliseconds(60000);
    gateway_ = std::make_unique<gateway::Gateway>(o);
    port_ = gateway_->bind();
    server_ = std::thread([this] { gateway_->serve(); });
  }

  void TearDown() override {
    if (gateway_) gateway_->stop();
    if (server_.joinable()) server_.join();
  }

  static std::filesystem::path npm_cache() {
    if (const char* env = std::getenv("EESCHED_NPM_CACHE"); env && *env) return env;
    return testing::source_dir() / ".cache" / "npm";
  }

  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/v1"; }

  // Runs tests/openai/client.mjs with these calls; returns its JSON by call name.
  nlohmann::json run_client(const nlohmann::json& calls) const {
    const nlohmann::json config{{"base_url", base_url()}, {"api_key", kApiKey}, {"calls", calls}};
    const auto config_file = d_.dir / "client.json";
    std::ofstream(config_file) << config.dump();
    const std::string cmd = "node " + (testing::source_dir() / "tests" / "openai" / "client.mjs").string() + " \"$(cat " +
                            config_file.string() + ")\" 2>&1";
    std::string out;
    FILE* pipe = popen(cmd.c_str(), "r");
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
    const int status = pclose(pipe);
    EXPECT_EQ(status, 0) << out;
    const auto j = nlohmann::json::parse(out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << out;
    return j;
  }

  // What local plaintext generation answers (the kv arm, greedy, stopping at EOS), as text.
  std::string local_text(const std::vector<int64_t>& prompt, int64_t max_tokens, const std::vector<std::string>& stops) const {
    const auto ids = testing::local_plaintext(prompt, "kv", max_tokens, d_.tokenizer.eos_id());
    std::string text = d_.tokenizer.decode(ids);
    for (const auto& s : stops) text = text.substr(0, text.find(s));
    return text;
  }

  testing::EncryptedDeployment d_;
  std::unique_ptr<testing::LocalCoordinator> coordinator_;
  std::vector<std::unique_ptr<testing::LocalWorker>> workers_;
  std::unique_ptr<gateway::Gateway> gateway_;
  std::thread server_;
  int port_ = 0;
};

TEST_F(GatewayEndToEnd, TheOpenAiClientGetsThePlaintextAnswersStreamedOrNot) {
  const std::string question = "Tell me about the sea and the ships.";
  const auto chat = runtime::render_chat_prompt(d_.tokenizer, {{"user", question}}, "");
  const std::string expected_chat = local_text(chat.ids, 24, chat.stop_strings);
  const std::string prompt = "The old man looked at the sea";
  const auto prompt_ids = d_.tokenizer.encode(prompt);
  const std::string expected_text = local_text(prompt_ids, 20, {});
  ASSERT_FALSE(expected_chat.empty());
  ASSERT_GT(expected_text.size(), 20u);
  // A stop string from the middle of the greedy answer: the answer ends right before it.
  const std::string stop = expected_text.substr(expected_text.size() / 2, 3);

  const nlohmann::json chat_request{{"model", "target"}, {"messages", {{{"role", "user"}, {"content", question}}}}, {"max_tokens", 24},
                                    {"eesched", {{"arm", "kv"}}}};
  const nlohmann::json text_request{{"model", "target"}, {"prompt", prompt}, {"max_tokens", 20}, {"eesched", {{"arm", "kv"}}}};
  auto sampled = chat_request;
  sampled["temperature"] = 0.9, sampled["seed"] = 7, sampled.erase("eesched");
  auto stopped = text_request;
  stopped["stop"] = {stop};
  auto stream_usage = chat_request;
  stream_usage["stream_options"] = {{"include_usage", true}};
  const auto r = run_client({
      {{"name", "models"}, {"kind", "models"}},
      {{"name", "chat"}, {"kind", "chat"}, {"request", chat_request}},
      {{"name", "chat_stream"}, {"kind", "chat"}, {"stream", true}, {"request", stream_usage}},
      {{"name", "text"}, {"kind", "completion"}, {"request", text_request}},
      {{"name", "text_stream"}, {"kind", "completion"}, {"stream", true}, {"request", text_request}},
      {{"name", "stop"}, {"kind", "completion"}, {"request", stopped}},
      {{"name", "stop_stream"}, {"kind", "completion"}, {"stream", true}, {"request", stopped}},
      {{"name", "sampled"}, {"kind", "chat"}, {"request", sampled}},
      {{"name", "sampled_stream"}, {"kind", "chat"}, {"stream", true}, {"request", sampled}},
      {{"name", "wrong_key"}, {"kind", "chat"}, {"api_key", "sk-wrong"}, {"request", chat_request}},
      {{"name", "unknown_model"}, {"kind", "chat"}, {"request", {{"model", "nope"}, {"messages", chat_request["messages"]}}}},
      {{"name", "no_worker"}, {"kind", "chat"}, {"request", {{"model", "ghost"}, {"messages", chat_request["messages"]}}}},
      {{"name", "bad_temperature"}, {"kind", "chat"}, {"request", {{"model", "target"}, {"messages", chat_request["messages"]}, {"temperature", 7}}}},
  });
  SCOPED_TRACE(r.dump(1));
  EXPECT_EQ(r["models"]["ids"], (nlohmann::json{"ghost", "target"}));
  // Greedy answers through the gateway equal local plaintext generation, streamed or not.
  EXPECT_EQ(r["chat"]["text"], expected_chat);
  EXPECT_EQ(r["chat"]["role"], "assistant");
  EXPECT_EQ(r["chat"]["usage"]["prompt_tokens"], static_cast<int64_t>(chat.ids.size()));
  EXPECT_EQ(r["chat_stream"]["text"], expected_chat);
  EXPECT_EQ(r["chat_stream"]["role"], "assistant");
  EXPECT_EQ(r["chat_stream"]["usage"], r["chat"]["usage"]);
  EXPECT_EQ(r["chat_stream"]["finish_reason"], r["chat"]["finish_reason"]);
  EXPECT_EQ(r["text"]["text"], expected_text);
  EXPECT_EQ(r["text"]["object"], "text_completion");
  EXPECT_EQ(r["text_stream"]["text"], expected_text);
  EXPECT_GT(r["text_stream"]["chunks"].get<int>(), 3) << "tokens arrive as they are produced";
  EXPECT_EQ(r["text"]["finish_reason"], r["text"]["usage"]["completion_tokens"] == 20 ? "length" : "stop");
  // The stop string ends the answer before it, and the task upstream.
  EXPECT_EQ(r["stop"]["text"], expected_text.substr(0, expected_text.find(stop)));
  EXPECT_EQ(r["stop"]["finish_reason"], "stop");
  EXPECT_EQ(r["stop_stream"]["text"], r["stop"]["text"]);
  // Seeded sampling is reproducible through the whole path.
  EXPECT_EQ(r["sampled_stream"]["text"], r["sampled"]["text"]);
  // Errors in the API's shape with the right status.
  EXPECT_EQ(r["wrong_key"]["error"]["status"], 401);
  EXPECT_EQ(r["wrong_key"]["error"]["code"], "invalid_api_key");
  EXPECT_EQ(r["unknown_model"]["error"]["status"], 404);
  EXPECT_EQ(r["unknown_model"]["error"]["code"], "model_not_found");
  EXPECT_EQ(r["no_worker"]["error"]["status"], 503);
  EXPECT_EQ(r["no_worker"]["error"]["code"], "no_worker");
  EXPECT_EQ(r["bad_temperature"]["error"]["status"], 400);
  EXPECT_EQ(r["bad_temperature"]["error"]["param"], "temperature");

  // The metrics count what happened.
  httplib::Client http("127.0.0.1", port_);
  const auto metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_THAT(metrics->body, HasSubstr("eesched_gateway_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"} 4\n"));
  EXPECT_THAT(metrics->body, HasSubstr("eesched_gateway_requests_total{endpoint=\"/v1/completions\",status=\"200\"} 4\n"));
  EXPECT_THAT(metrics->body, HasSubstr("eesched_gateway_requests_total{endpoint=\"/v1/chat/completions\",status=\"401\"} 1\n"));
  EXPECT_THAT(metrics->body, HasSubstr("eesched_gateway_cancelled_total{reason=\"stop_string\"}"));
  EXPECT_THAT(metrics->body, HasSubstr("eesched_gateway_time_to_first_token_seconds_count{model=\"target\"} 8\n"));
  // /health: 503 while a served model ("ghost") has no worker, naming it; the others counted.
  const auto health = http.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 503);
  const auto h = nlohmann::json::parse(health->body);
  EXPECT_EQ(h["status"], "unavailable");
  EXPECT_EQ(h["workers"]["target"], 2);
  EXPECT_EQ(h["workers"]["ghost"], 0);
  EXPECT_THAT(h["error"].get<std::string>(), HasSubstr("ghost"));
  {
    // A gateway serving only what the workers hold is healthy.
    gateway::GatewayOptions o;
    o.coordinator = coordinator_->at();
    o.key = d_.dir / "client.eekey";
    o.models = {{"target", testing::tokenizer_path(), ""}};
    o.port = 0;
    gateway::Gateway healthy(o);
    const int port = healthy.bind();
    std::thread serving([&] { healthy.serve(); });
    httplib::Client probe("127.0.0.1", port);
    const auto ok = probe.Get("/health");
    healthy.stop();
    serving.join();
    ASSERT_TRUE(ok);
    EXPECT_EQ(ok->status, 200) << ok->body;
    EXPECT_EQ(nlohmann::json::parse(ok->body)["workers"]["target"], 2);
  }

  // The coordinator's own /metrics (`coordinator --metrics-listen`) counts the same tasks.
  scheduler::MetricsEndpoint coordinator_metrics({"127.0.0.1", 0}, **coordinator_);
  httplib::Client scrape("127.0.0.1", coordinator_metrics.port());
  const auto c = scrape.Get("/metrics");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->status, 200);
  // Eight tasks ran; the 401, 404 and 400 never reached the coordinator and the 503 was refused
  // there (no worker holds "ghost"). The two cut short by a stop string end done or cancelled,
  // whichever comes first: the cancel or the task's last token.
  EXPECT_THAT(c->body, HasSubstr("eesched_coordinator_tasks_total{status=\"accepted\"} 8\n"));
  EXPECT_EQ(metric_value(c->body, "eesched_coordinator_tasks_total{status=\"done\"}") +
                metric_value(c->body, "eesched_coordinator_tasks_total{status=\"cancelled\"}"),
            8);
  EXPECT_THAT(c->body, HasSubstr("eesched_coordinator_decisions_total{arm=\"kv\",explored=\"false\"} 8\n"));
  EXPECT_THAT(c->body, HasSubstr("eesched_coordinator_live_workers 2\n"));
  EXPECT_THAT(c->body, HasSubstr("eesched_coordinator_queue_depth 0\n"));
  EXPECT_THAT(c->body, HasSubstr("eesched_coordinator_worker_tasks{worker=\"w1\"} 0\n"));
}

TEST_F(GatewayEndToEnd, RawHttpErrorsAndADisconnectingStreamIsCancelledUpstream) {
  httplib::Client http("127.0.0.1", port_);
  const httplib::Headers auth{{"Authorization", std::string("Bearer ") + kApiKey}};
  auto res = http.Post("/v1/chat/completions", auth, "{\"model\": ", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  EXPECT_EQ(nlohmann::json::parse(res->body)["error"]["type"], "invalid_request_error");
  res = http.Get("/v1/nothing", auth);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);
  res = http.Get("/v1/models");  // no key
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 401);

  // A long streamed answer whose client reads one event and hangs up: the task is cancelled.
  const nlohmann::json body{{"model", "target"}, {"prompt", "The sea"}, {"max_tokens", 1500}, {"stream", true},
                            {"eesched", {{"arm", "plain"}, {"ignore_eos", true}}}};
  int events = 0;
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.headers = auth;
  req.headers.emplace("Content-Type", "application/json");
  req.body = body.dump();
  req.content_receiver = [&](const char*, std::size_t, uint64_t, uint64_t) { return ++events < 2; };
  http.send(req);
  EXPECT_GE(events, 1);
  std::string metrics;
  for (int i = 0; i < 600 && metrics.find("reason=\"client_gone\"") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    metrics = gateway_->metrics_text();
  }
  EXPECT_THAT(metrics, HasSubstr("eesched_gateway_cancelled_total{reason=\"client_gone\"} 1\n"));
  EXPECT_THAT(metrics, HasSubstr("eesched_gateway_requests_total{endpoint=\"/v1/completions\",status=\"499\"} 1\n"));
}

}  // namespace
}  // namespace eesched
