// net/: frames, typed messages, worker authentication and addresses as pure functions, then
// framed connections over real loopback sockets (an echo server on an io_context thread, driven
// by BlockingClient), and a worker's coordinator session against a scripted coordinator.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/write.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "net/auth.h"
#include "net/blocking_client.h"
#include "net/connection.h"
#include "net/endpoint.h"
#include "net/listener.h"
#include "net/messages.h"
#include "net/protocol.h"
#include "net/worker_session.h"
#include "tests/expect_error.h"

namespace eesched::net {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;
namespace fs = std::filesystem;

std::string runtime_error_of(const std::function<void()>& fn) {
  return eesched::testing::error_of_type<std::runtime_error>(fn);
}

// The longest any test waits for something that should happen at once: a safety net, never a
// measurement.
constexpr auto kWait = 3000ms;

// The code of the ProtocolError fn throws; any other outcome fails the test.
std::string protocol_code(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const ProtocolError& e) {
    return e.code();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected a ProtocolError, got: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected a ProtocolError, got none";
  return "";
}

std::string header_of(uint32_t n) {
  return {static_cast<char>(n >> 24), static_cast<char>(n >> 16), static_cast<char>(n >> 8), static_cast<char>(n)};
}

std::size_t length_of(const std::string& header, std::size_t max_frame_bytes) {
  return frame_body_length(reinterpret_cast<const uint8_t*>(header.data()), max_frame_bytes);
}

// A frame with any body at all, valid or not.
std::string raw_frame(const std::string& body) { return header_of(static_cast<uint32_t>(body.size())) + body; }

// ---------------------------------------------------------------------------------------------
// Frames

TEST(Frame, IsABigEndianLengthThenTheJson) {
  const json small{{"a", 1}};
  EXPECT_EQ(encode_frame(small), std::string("\0\0\0\x07", 4) + R"({"a":1})");

  // 66051 = 0x00010203: every header byte differs, so the byte order shows.
  const json big{{"s", std::string(66043, 'x')}};
  const std::string frame = encode_frame(big);
  ASSERT_EQ(frame.size(), kFrameHeaderBytes + 66051);
  EXPECT_EQ(frame.substr(0, 4), std::string("\x00\x01\x02\x03", 4));
  EXPECT_EQ(json::parse(frame.substr(4)), big);
}

TEST(Frame, BodyLengthRoundTrips) {
  for (const std::size_t n : {std::size_t{1}, std::size_t{255}, std::size_t{256}, std::size_t{65536}, std::size_t{1} << 24}) {
    EXPECT_EQ(length_of(header_of(static_cast<uint32_t>(n)), kDefaultMaxFrameBytes), n);
  }
  const json message = make_message(MessageType::Heartbeat);
  const std::string frame = encode_frame(message);
  EXPECT_EQ(length_of(frame.substr(0, 4), kDefaultMaxFrameBytes), frame.size() - kFrameHeaderBytes);
  EXPECT_EQ(length_of(header_of(4096), 4096), 4096u);  // the limit itself is allowed
}

TEST(Frame, ZeroAndOverLimitLengthsAreTooLarge) {
  EXPECT_EQ(protocol_code([] { length_of(header_of(0), 4096); }), codes::kTooLarge);
  EXPECT_EQ(protocol_code([] { length_of(header_of(4097), 4096); }), codes::kTooLarge);
  EXPECT_EQ(protocol_code([] { length_of(header_of(UINT32_MAX), kDefaultMaxFrameBytes); }), codes::kTooLarge);
  EXPECT_EQ(protocol_code([] { length_of("GET ", kDefaultMaxFrameBytes); }), codes::kTooLarge);
}

TEST(Frame, EncodingOverTheLimitIsTooLarge) {
  const json message{{"s", std::string(100, 'x')}};
  const std::size_t n = message.dump().size();
  EXPECT_EQ(encode_frame(message, n).size(), kFrameHeaderBytes + n);
  EXPECT_EQ(protocol_code([&] { encode_frame(message, n - 1); }), codes::kTooLarge);
}

// ---------------------------------------------------------------------------------------------
// parse_message

json valid_task() { return json::parse(R"({"model": "tiny", "prompt_ids": [[1, 2, 3]], "max_new_tokens": 4})"); }

json submit_with(const json& task) {
  json j = make_message(MessageType::Submit);
  j["task"] = task;
  return j;
}

TEST(ParseMessage, RefusesWhatIsNotAJsonObject) {
  EXPECT_EQ(protocol_code([] { parse_message("{not json"); }), codes::kBadJson);
  EXPECT_EQ(protocol_code([] { parse_message(""); }), codes::kBadJson);
  EXPECT_EQ(protocol_code([] { parse_message(R"([{"type":"Heartbeat","v":1}])"); }), codes::kBadJson);
  EXPECT_EQ(protocol_code([] { parse_message("42"); }), codes::kBadJson);
}

TEST(ParseMessage, RefusesAMissingOrOtherVersion) {
  EXPECT_EQ(protocol_code([] { parse_message(R"({"type":"Heartbeat"})"); }), codes::kBadVersion);
  EXPECT_EQ(protocol_code([] { parse_message(R"({"type":"Heartbeat","v":2})"); }), codes::kBadVersion);
  EXPECT_EQ(protocol_code([] { parse_message(R"({"type":"Heartbeat","v":"1"})"); }), codes::kBadVersion);
  EXPECT_EQ(parse_message(R"({"type":"Heartbeat","v":1})").type, MessageType::Heartbeat);
}

TEST(ParseMessage, RefusesAMissingOrUnknownType) {
  EXPECT_EQ(protocol_code([] { parse_message(R"({"v":1})"); }), codes::kUnknownType);
  EXPECT_EQ(protocol_code([] { parse_message(R"({"type":"Bogus","v":1})"); }), codes::kUnknownType);
  EXPECT_EQ(protocol_code([] { parse_message(R"({"type":7,"v":1})"); }), codes::kUnknownType);
}

TEST(ParseMessage, RefusesASubmitWithABadField) {
  ASSERT_EQ(parse_message(submit_with(valid_task()).dump()).type, MessageType::Submit);

  auto spoiled = [](const std::function<void(json&)>& spoil) {
    json task = valid_task();
    spoil(task);
    return submit_with(task).dump();
  };
  auto code_for = [&](const std::function<void(json&)>& spoil) {
    return protocol_code([&] { parse_message(spoiled(spoil)); });
  };
  EXPECT_EQ(code_for([](json& t) { t.erase("model"); }), codes::kBadMessage);
  EXPECT_EQ(code_for([](json& t) { t["prompt_ids"] = json::parse("[[1, -2, 3]]"); }), codes::kBadMessage);
  EXPECT_EQ(code_for([](json& t) { t["prompt_ids"] = json::parse("[[1], []]"); }), codes::kBadMessage);
  EXPECT_EQ(code_for([](json& t) { t["stop_ids"] = json::parse("[-1]"); }), codes::kBadMessage);
  EXPECT_EQ(code_for([](json& t) { t["top_p"] = 0; }), codes::kBadMessage);
  EXPECT_EQ(code_for([](json& t) { t["prompt_ids"] = json(std::vector<std::vector<int64_t>>(65, {1})); }),
            codes::kBadMessage);
  EXPECT_EQ(code_for([](json& t) { t["max_new_tokens"] = "4"; }), codes::kBadMessage);
  EXPECT_EQ(code_for([](json& t) { t["seed"] = -1; }), codes::kBadMessage);
  EXPECT_EQ(code_for([](json& t) { t["quality"] = "sloppy"; }), codes::kBadMessage);
  // 64 rows is the limit, not over it.
  EXPECT_NO_THROW(parse_message(spoiled([](json& t) { t["prompt_ids"] = json(std::vector<std::vector<int64_t>>(64, {1})); })));
}

TEST(ParseMessage, RefusesOtherMessagesWithABadField) {
  EXPECT_EQ(protocol_code([] { parse_message(R"({"type":"Submit","v":1})"); }), codes::kBadMessage);
  EXPECT_EQ(protocol_code([] { parse_message(R"({"type":"Submit","v":1,"task":[]})"); }), codes::kBadMessage);
  EXPECT_EQ(protocol_code([] { parse_message(R"({"type":"Hello","v":1})"); }), codes::kBadMessage);
  EXPECT_EQ(protocol_code([] { parse_message(R"({"type":"Error","v":1,"message":"no code"})"); }), codes::kBadMessage);
  EXPECT_EQ(protocol_code([] { parse_message(R"({"type":"Cancel","v":1})"); }), codes::kBadMessage);
  EXPECT_EQ(protocol_code([] { parse_message(R"({"type":"Register","v":1,"name":"w","hardware":{},"models":[],"nonce":"n","proof":"p"})"); }),
            codes::kBadMessage);
}

// What fuzzing found (tests/fuzz/regressions/ holds the inputs): numbers out of a field's range
// are refused, not wrapped, truncated or narrowed; a body nested beyond reason is refused before
// the JSON parser builds it.
TEST(ParseMessage, RefusesOutOfRangeNumbersAndDeepNesting) {
  EXPECT_EQ(protocol_code([] { parse_message(R"({"type":"Accepted","v":1,"task_id":11111111111111111117})"); }), codes::kBadMessage);
  EXPECT_EQ(parse_message(R"({"type":"Accepted","v":1,"task_id":9223372036854775807})").type, MessageType::Accepted);
  const auto reg = [](const std::string& field, const std::string& value) {
    json hw = json::parse(R"({"host":"h","cpu_model":"c","threads":1,"gflops":1.0,"copy_gbps":1.0,"mem_total_bytes":1,
                              "mem_free_bytes":0,"measured_at":""})");
    hw[field] = json::parse(value);
    return json{{"type", "Register"}, {"v", 1},       {"name", "w"},  {"hardware", hw},
                {"models", json::array()}, {"nonce", "n"}, {"proof", "p"}}
        .dump();
  };
  for (const auto& [field, value] : std::vector<std::pair<std::string, std::string>>{
           {"mem_total_bytes", "1e100"}, {"threads", "2.5"}, {"threads", "4294967297"}, {"mem_free_bytes", "-1"}})
    EXPECT_EQ(protocol_code([&] { read_message<Register>(json::parse(reg(field, value))); }), codes::kBadMessage) << field << "=" << value;
  // A negative task_id beside a request_id read back as the request_id alone (k4).
  EXPECT_EQ(protocol_code([] { parse_message(R"({"type":"Cancel","v":1,"request_id":"?","task_id":-875808})"); }), codes::kBadMessage);
  EXPECT_EQ(parse_message(R"({"type":"Cancel","v":1,"request_id":"?","task_id":0})").type, MessageType::Cancel);
  std::string deep = std::string(33, '[') + std::string(33, ']');
  EXPECT_EQ(protocol_code([&] { parse_message(R"({"type":"Heartbeat","v":1,"x":)" + deep + "}"); }), codes::kBadJson);
  // Brackets inside strings are text, not nesting.
  EXPECT_EQ(parse_message(R"({"type":"Heartbeat","v":1,"queued":0,"x":")" + deep + R"("})").type, MessageType::Heartbeat);
}

// Message -> frame -> parse_message: the typed payload that comes out equals, as a whole, the
// one that went in (operator== over every field), so a field one side forgets fails here.
template <class T>
T round_trip(const T& m, MessageType expected_type) {
  const std::string frame = encode_frame(to_message(m));
  EXPECT_EQ(length_of(frame.substr(0, 4), kDefaultMaxFrameBytes), frame.size() - kFrameHeaderBytes);
  const Message parsed = parse_message(std::string_view(frame).substr(kFrameHeaderBytes));
  EXPECT_EQ(parsed.type, expected_type);
  EXPECT_EQ(to_message(parsed.payload), to_message(m));
  const T got = parsed.as<T>();
  EXPECT_TRUE(got == m) << "sent     " << to_message(m).dump() << "\nreceived " << to_message(got).dump();
  return got;
}

TEST(MessageRoundTrip, Hello) { round_trip(Hello{"ab12", "coordinator@host"}, MessageType::Hello); }

TEST(MessageRoundTrip, RegisterWithHardwareAndTwoModels) {
  Register m;
  m.name = "box/threads=8";
  m.hardware = {"box", "Some CPU @ 3GHz", 8, 123.5, 17.25, int64_t{64} << 30, int64_t{40} << 30, "2024-01-02T03:04:05Z"};
  ModelInfo target;
  target.row = {0, "llama-tiny", "fp-target", "llama", 12, 768, 3072, 12, 4, 32000, 0, 110000000, 440000000, "f32", true, {}};
  target.row.quality = {{"int8", {1.003, 0.97}}, {"int8+prune20", {1.041, 0.91}}};
  target.key_fingerprint = "key-1";
  target.draft = false;
  ModelInfo draft;
  draft.row = {0, "qwen-draft", "fp-draft", "qwen3", 2, 256, 1024, 4, 2, 32000, 128, 9000000, 18000000, "bf16", true, {}};
  draft.key_fingerprint = "key-2";
  draft.draft = true;
  m.models = {target, draft};
  m.dry_run = true;
  m.slots = 8;
  m.nonce = "worker-nonce";
  m.proof = "worker-proof";
  round_trip(m, MessageType::Register);
}

TEST(MessageRoundTrip, Registered) { round_trip(Registered{42, "coordinator-proof", 250}, MessageType::Registered); }

TEST(MessageRoundTrip, Heartbeat) {
  round_trip(Heartbeat{17, false}, MessageType::Heartbeat);
  round_trip(Heartbeat{0, true}, MessageType::Heartbeat);
  // A peer from before draining sends no such field, and a non-draining one writes none.
  EXPECT_FALSE(read_message<Heartbeat>(json::parse(R"({"type":"Heartbeat","v":1,"queued":2})")).draining);
  EXPECT_FALSE(to_message(Heartbeat{2, false}).contains("draining"));
  EXPECT_EQ(protocol_code([] { read_message<Heartbeat>(json::parse(R"({"queued":0,"draining":"yes"})")); }), codes::kBadMessage);
}

TEST(MessageRoundTrip, StatusAndItsReply) {
  round_trip(Status{}, MessageType::Status);
  StatusReply r;
  r.workers = 3;
  r.queued = 5;
  r.models = {{"llama-tiny", "key-1", 2, 16}, {"llama-tiny", "key-2", 1, 1}};
  round_trip(r, MessageType::StatusReply);
  EXPECT_THROW(parse_message(R"({"type":"StatusReply","v":1,"workers":-1,"models":[]})"), ProtocolError);
  EXPECT_THROW(parse_message(R"({"type":"StatusReply","v":1,"workers":1,"models":[{"name":"m","workers":-2}]})"), ProtocolError);
  // A Register from an older worker, without slots, decodes with one.
  auto old = to_message(Register{"w", {}, {}, false, 1, "n", "p"});
  old.erase("slots");
  EXPECT_EQ(parse_message(old.dump()).as<Register>().slots, 1);
}

TaskRequest sample_request() {
  TaskRequest r;
  r.request_id = "req-1";
  r.model = "llama-tiny";
  r.key_fingerprint = "key-1";
  r.prompt_ids = {{5, 6, 7}, {8, 9}};
  r.generation = {48, 0.75, 40, 0.5, UINT64_MAX, {2, 99}};  // a seed beyond int64 travels as unsigned
  r.quality = data::Quality::Tolerant;
  r.max_ppl_ratio = 1.2;
  r.arm = "spec-k4";
  return r;
}

TEST(MessageRoundTrip, SubmitWithEveryTaskField) { round_trip(Submit{sample_request()}, MessageType::Submit); }

TEST(MessageRoundTrip, SubmitDefaultsOptionalTaskFields) {
  const Submit got = parse_message(submit_with(valid_task()).dump()).as<Submit>();
  TaskRequest expected;
  expected.model = "tiny";
  expected.prompt_ids = got.task.prompt_ids;
  expected.generation.max_new_tokens = got.task.generation.max_new_tokens;
  EXPECT_TRUE(got.task == expected) << to_message(Submit{got.task}).dump();
}

TEST(MessageRoundTrip, Accepted) { round_trip(Accepted{9, "req-9"}, MessageType::Accepted); }

TEST(MessageRoundTrip, Assign) {
  Assign m;
  m.task_id = 31;
  m.attempt = 2;
  m.arm = "spec-k4";
  m.model = "llama-tiny";
  m.draft = "llama-draft";
  m.prompt_ids = {{1, 2}, {3}};
  m.generation = {7, 1.5, 3, 0.875, uint64_t{1} << 63, {0}};
  m.time_limit_ms = 2500.5;
  EXPECT_EQ(round_trip(m, MessageType::Assign).resume_from, 0);
  EXPECT_FALSE(to_message(m).contains("resume_from")) << "a first attempt says nothing of resuming";
  m.prompt_ids = {{1, 2}, {3, 4}};
  m.resume_from = 1;  // each row's prompt ends with the one id an earlier attempt streamed
  EXPECT_EQ(round_trip(m, MessageType::Assign).resume_from, 1);
}

// A resumed Assign's resume_from is a count of ids at the end of every prompt row: never negative,
// and each row holds at least one id of the client's prompt before them.
TEST(ParseMessage, RefusesABadResumeFrom) {
  Assign m;
  m.task_id = 3;
  m.arm = "kv";
  m.model = "tiny";
  m.prompt_ids = {{1, 2, 3}, {4, 5}};
  m.resume_from = 1;
  ASSERT_EQ(parse_message(to_message(m).dump()).as<Assign>().resume_from, 1);
  auto code_for = [&](const json& value) {
    json j = to_message(m);
    j["resume_from"] = value;
    return protocol_code([&] { parse_message(j.dump()); });
  };
  EXPECT_EQ(code_for(-1), codes::kBadMessage);
  EXPECT_EQ(code_for(2), codes::kBadMessage) << "the second row would be all resumed ids";
  EXPECT_EQ(code_for("1"), codes::kBadMessage);
  EXPECT_EQ(code_for(1.5), codes::kBadMessage);
}

// The GenerationParams a client sends reach the worker unchanged: Submit -> Assign carries the
// one value, not a re-spelling of its fields.
TEST(MessageRoundTrip, GenerationParamsTravelUnchangedFromSubmitToAssign) {
  const Submit submitted = round_trip(Submit{sample_request()}, MessageType::Submit);
  Assign a;
  a.task_id = 1;
  a.arm = "kv";
  a.model = submitted.task.model;
  a.prompt_ids = submitted.task.prompt_ids;
  a.generation = submitted.task.generation;
  EXPECT_EQ(round_trip(a, MessageType::Assign).generation, sample_request().generation);
}

Result sample_result() {
  Result m;
  m.task_id = 31;
  m.attempt = 3;
  m.report.ok = true;
  m.report.error = "";
  m.report.tokens = {{10, 11, 12}, {}};
  m.report.latency_ms = 123.25;
  m.report.ttft_ms = 20.5;
  m.report.ms_per_token = 8.125;
  m.report.tokens_per_s = 123.0;
  m.report.new_tokens = 3;
  m.report.peak_rss_bytes = int64_t{3} << 30;
  m.report.acceptance_rate = 0.625;
  m.report.started_at = "2024-01-02T03:04:05Z";
  m.report.ended_at = "2024-01-02T03:04:06Z";
  m.request_id = "req-1";
  m.status = "done";
  m.worker = "box/threads=8";
  m.arm = "spec-k4";
  m.explored = true;
  m.attempts = 3;
  m.predicted_ms = 99.5;
  m.ppl_ratio = 1.004;
  return m;
}

TEST(MessageRoundTrip, ResultWithAFullReport) { round_trip(sample_result(), MessageType::Result); }

TEST(MessageRoundTrip, ResultOfAFailedRunWithoutAcceptanceRate) {
  Result m = sample_result();
  m.report.ok = false;
  m.report.error = "out of memory";
  m.report.acceptance_rate.reset();
  m.ppl_ratio.reset();
  EXPECT_FALSE(round_trip(m, MessageType::Result).report.acceptance_rate.has_value());
}

TEST(MessageRoundTrip, Tokens) {
  round_trip(Tokens{31, 2, "", {0, 0}, {{10}, {11}}}, MessageType::Tokens);  // from a worker
  const Tokens relayed = round_trip(Tokens{31, 2, "req-1", {3, 7}, {{12, 13}, {}}}, MessageType::Tokens);
  EXPECT_EQ(relayed.request_id, "req-1");
  EXPECT_EQ(relayed.offsets, (std::vector<int64_t>{3, 7}));
  EXPECT_EQ(relayed.tokens, (std::vector<std::vector<int64_t>>{{12, 13}, {}}));
  // attempt defaults to 1, request_id to empty
  const auto j = json::parse(R"({"type":"Tokens","v":1,"task_id":4,"offsets":[0],"tokens":[[5]]})");
  EXPECT_TRUE(read_message<Tokens>(j) == (Tokens{4, 1, "", {0}, {{5}}}));
}

TEST(ParseMessage, RefusesABadTokens) {
  const json valid = json::parse(R"({"type":"Tokens","v":1,"task_id":4,"attempt":2,"offsets":[0,3],"tokens":[[5,6],[]]})");
  ASSERT_EQ(parse_message(valid.dump()).type, MessageType::Tokens);
  auto code_for = [&](const std::function<void(json&)>& spoil) {
    json j = valid;
    spoil(j);
    return protocol_code([&] { parse_message(j.dump()); });
  };
  EXPECT_EQ(code_for([](json& j) { j.erase("task_id"); }), codes::kBadMessage);
  EXPECT_EQ(code_for([](json& j) { j["task_id"] = 0; }), codes::kBadMessage);
  EXPECT_EQ(code_for([](json& j) { j["attempt"] = 0; }), codes::kBadMessage);
  EXPECT_EQ(code_for([](json& j) { j["request_id"] = std::string(129, 'r'); }), codes::kBadMessage);
  EXPECT_EQ(code_for([](json& j) { j.erase("offsets"); }), codes::kBadMessage);
  EXPECT_EQ(code_for([](json& j) { j.erase("tokens"); }), codes::kBadMessage);
  EXPECT_EQ(code_for([](json& j) { j["offsets"] = json::parse("[0]"); }), codes::kBadMessage) << "one offset per row";
  EXPECT_EQ(code_for([](json& j) { j["offsets"] = json::parse("[0,-1]"); }), codes::kBadMessage);
  EXPECT_EQ(code_for([](json& j) { j["offsets"] = json::parse("[0,1.5]"); }), codes::kBadMessage);
  EXPECT_EQ(code_for([](json& j) { j["offsets"] = json::parse("[0,18446744073709551615]"); }), codes::kBadMessage);
  EXPECT_EQ(code_for([](json& j) { j["tokens"] = json::parse("[[5,-6],[]]"); }), codes::kBadMessage);
  EXPECT_EQ(code_for([](json& j) { j["tokens"] = json::parse("[[5,6],7]"); }), codes::kBadMessage);
  EXPECT_EQ(code_for([](json& j) {
              j["offsets"] = json::array();
              j["tokens"] = json::array();
            }),
            codes::kBadMessage)
      << "no rows";
  EXPECT_EQ(code_for([](json& j) {
              j["offsets"] = json(std::vector<int64_t>(65, 0));
              j["tokens"] = json(std::vector<std::vector<int64_t>>(65, {1}));
            }),
            codes::kBadMessage);
  EXPECT_EQ(code_for([](json& j) { j["offsets"] = json::parse("[1048576,0]"); }), codes::kBadMessage) << "past the longest answer";
  EXPECT_EQ(code_for([](json& j) { j["offsets"] = json::parse("[1048577,0]"); }), codes::kBadMessage);
  // 64 rows and an answer of exactly 2^20 ids are within bounds.
  EXPECT_NO_THROW(parse_message(json{{"type", "Tokens"}, {"v", 1}, {"task_id", 1},
                                     {"offsets", std::vector<int64_t>(64, 0)},
                                     {"tokens", std::vector<std::vector<int64_t>>(64, std::vector<int64_t>{1})}}
                                    .dump()));
  EXPECT_NO_THROW(parse_message(json::parse(R"({"type":"Tokens","v":1,"task_id":1,"offsets":[1048575],"tokens":[[9]]})").dump()));
}

TEST(MessageRoundTrip, Cancel) {
  round_trip(Cancel{12, ""}, MessageType::Cancel);
  round_trip(Cancel{0, "req-5"}, MessageType::Cancel);
}

TEST(MessageRoundTrip, Error) {
  round_trip(ErrorMsg{codes::kTaskFailed, "all attempts failed", 77}, MessageType::Error);
  round_trip(ErrorMsg{codes::kShuttingDown, "draining", std::nullopt}, MessageType::Error);
}

// The pair every message's fields are spelled in: a message with each field away from its default
// must differ from the default message, or operator== (and so the tests above) would miss it.
TEST(MessageRoundTrip, EveryFieldOfTheSamplesIsSet) {
  EXPECT_FALSE(sample_request() == TaskRequest{});
  const auto g = sample_request().generation;
  const data::GenerationParams defaults;
  EXPECT_NE(g.max_new_tokens, defaults.max_new_tokens);
  EXPECT_NE(g.temperature, defaults.temperature);
  EXPECT_NE(g.top_k, defaults.top_k);
  EXPECT_NE(g.top_p, defaults.top_p);
  EXPECT_NE(g.seed, defaults.seed);
  EXPECT_NE(g.stop_ids, defaults.stop_ids);
}

TEST(MessageTypeName, RoundTrips) {
  for (const auto t : {MessageType::Hello, MessageType::Register, MessageType::Registered, MessageType::Heartbeat,
                       MessageType::Submit, MessageType::Accepted, MessageType::Assign, MessageType::Tokens,
                       MessageType::Result, MessageType::Cancel, MessageType::Error}) {
    EXPECT_EQ(parse_message_type(message_type_name(t)), t);
  }
  EXPECT_STREQ(message_type_name(MessageType::Tokens), "Tokens");
  EXPECT_EQ(parse_message_type("hello"), std::nullopt);
}

// ---------------------------------------------------------------------------------------------
// Authentication

constexpr const char* kSecret = "0123456789abcdef-shared-secret";

TEST(Auth, ProofIsDeterministicHexAndBindsEveryInput) {
  const Token token = Token::from_secret(kSecret);
  const std::string p = token.proof(kWorkerProofLabel, "nonce-1", "worker-a");
  EXPECT_THAT(p, MatchesRegex("[0-9a-f]{64}"));
  EXPECT_EQ(Token::from_secret(kSecret).proof(kWorkerProofLabel, "nonce-1", "worker-a"), p);

  EXPECT_NE(token.proof(kWorkerProofLabel, "nonce-2", "worker-a"), p);
  EXPECT_NE(token.proof(kWorkerProofLabel, "nonce-1", "worker-b"), p);
  EXPECT_NE(token.proof(kCoordinatorProofLabel, "nonce-1", "worker-a"), p);
  EXPECT_NE(Token::from_secret(std::string(kSecret) + "!").proof(kWorkerProofLabel, "nonce-1", "worker-a"), p);
  // The parts are delimited: moving a character from nonce to name changes the proof.
  EXPECT_NE(token.proof(kWorkerProofLabel, "nonce-1w", "orker-a"), p);
}

TEST(Auth, VerifyAcceptsOnlyTheRightProof) {
  const Token token = Token::from_secret(kSecret);
  const std::string p = token.proof(kWorkerProofLabel, "n", "w");
  EXPECT_TRUE(token.verify(kWorkerProofLabel, "n", "w", p));
  std::string flipped = p;
  flipped[10] = flipped[10] == '0' ? '1' : '0';
  EXPECT_FALSE(token.verify(kWorkerProofLabel, "n", "w", flipped));
  EXPECT_FALSE(token.verify(kWorkerProofLabel, "n", "w", p.substr(0, 63)));
  EXPECT_FALSE(token.verify(kWorkerProofLabel, "n", "w", p + "0"));
  EXPECT_FALSE(token.verify(kWorkerProofLabel, "n", "w", ""));
  EXPECT_FALSE(token.verify(kCoordinatorProofLabel, "n", "w", p));  // not reflectable
  EXPECT_FALSE(Token::from_secret(std::string(kSecret) + "x").verify(kWorkerProofLabel, "n", "w", p));
}

TEST(Auth, ShortSecretsAreRefused) {
  EXPECT_THROW(Token::from_secret(""), std::runtime_error);
  EXPECT_THROW(Token::from_secret(std::string(15, 'k')), std::runtime_error);
  EXPECT_NO_THROW(Token::from_secret(std::string(16, 'k')));
}

class TokenFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::random_device rd;
    dir_ = fs::temp_directory_path() / ("eesched-net-" + std::to_string(rd()) + std::to_string(rd()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  static std::string slurp(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }
  static void write(const fs::path& p, const std::string& text) { std::ofstream(p, std::ios::binary) << text; }
  fs::path dir_;
};

TEST_F(TokenFileTest, WriteNewCreatesAPrivateFileThatReadsBack) {
  const fs::path path = dir_ / "token";
  Token::write_new(path);
  struct stat st{};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  const std::string text = slurp(path);
  ASSERT_THAT(text, MatchesRegex("[0-9a-f]{64}\n"));
  const Token from_file = Token::read_file(path);
  // read_file trims the newline: the token is the 64 hex characters.
  EXPECT_EQ(from_file.proof(kWorkerProofLabel, "n", "w"), Token::from_secret(text.substr(0, 64)).proof(kWorkerProofLabel, "n", "w"));

  const fs::path other = dir_ / "other";
  Token::write_new(other);
  EXPECT_NE(slurp(other), text);  // fresh randomness each time
}

TEST_F(TokenFileTest, WriteNewRefusesToOverwrite) {
  const fs::path path = dir_ / "token";
  Token::write_new(path);
  const std::string before = slurp(path);
  const std::string message = runtime_error_of([&] { Token::write_new(path); });
  EXPECT_THAT(message, HasSubstr(path.string()));
  EXPECT_EQ(slurp(path), before);
}

TEST_F(TokenFileTest, ReadFileTrimsWhitespace) {
  const fs::path path = dir_ / "token";
  write(path, "  \t" + std::string(kSecret) + "\r\n\n");
  EXPECT_EQ(Token::read_file(path).proof(kWorkerProofLabel, "n", "w"),
            Token::from_secret(kSecret).proof(kWorkerProofLabel, "n", "w"));
}

TEST_F(TokenFileTest, ReadFileNamesTheFileItCannotUse) {
  const fs::path missing = dir_ / "missing";
  EXPECT_THAT(runtime_error_of([&] { Token::read_file(missing); }), HasSubstr(missing.string()));

  for (const std::string content : {"", " \n\n", "too-short\n"}) {
    SCOPED_TRACE(content);
    const fs::path path = dir_ / "bad";
    write(path, content);
    EXPECT_THAT(runtime_error_of([&] { Token::read_file(path); }), HasSubstr(path.string()));
  }
}

TEST(Auth, NoncesAreDistinctHex) {
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    const std::string n = make_nonce();
    EXPECT_THAT(n, MatchesRegex("[0-9a-f]{64}"));
    seen.insert(n);
  }
  EXPECT_EQ(seen.size(), 100u);
}

// ---------------------------------------------------------------------------------------------
// Addresses

TEST(Endpoint, ParsesHostAndPort) {
  const Endpoint a = parse_endpoint("127.0.0.1:7700");
  EXPECT_EQ(a.host, "127.0.0.1");
  EXPECT_EQ(a.port, 7700);
  EXPECT_EQ(a.str(), "127.0.0.1:7700");

  const Endpoint any = parse_endpoint("localhost:0");
  EXPECT_EQ(any.host, "localhost");
  EXPECT_EQ(any.port, 0);

  EXPECT_EQ(parse_endpoint("example.org:65535").port, 65535);
  const Endpoint v6 = parse_endpoint("[::1]:80");
  EXPECT_EQ(v6.host, "::1");
  EXPECT_EQ(v6.port, 80);
}

TEST(Endpoint, RefusesMalformedAddresses) {
  for (const std::string bad : {"", "nohost", ":1", "h:", "h:99999", "h:65536", "h:x", "h:-1", "h:80x", "h: 80"}) {
    SCOPED_TRACE(bad);
    const std::string message = runtime_error_of([&] { parse_endpoint(bad); });
    EXPECT_THAT(message, HasSubstr("'" + bad + "'"));
  }
}

// ---------------------------------------------------------------------------------------------
// Connections over loopback

// A Listener on 127.0.0.1:0 and one background thread running its io_context: what the test
// servers below share. Declare it before the state its accept handler uses, and start() it once
// that state is ready, so the io_context outlives every connection made on it.
class LoopbackServer {
 public:
  LoopbackServer() : work_(asio::make_work_guard(io_)) {}
  ~LoopbackServer() {
    if (thread_.joinable()) shut_down([] {});
  }

  void start(Listener::AcceptHandler on_accept) {
    listener_.emplace(io_, Endpoint{"127.0.0.1", 0}, std::move(on_accept));
    thread_ = std::thread([this] {
      io_.run();
      stopped_.set_value();
    });
  }

  uint16_t port() const { return listener_->port(); }

  // Closes the listener and runs close_all on the io thread, which must close every connection:
  // that cancels all their work, so run() returns; stop() is the safety net. Then joins.
  void shut_down(std::function<void()> close_all) {
    asio::post(io_, [this, close_all = std::move(close_all)] {
      listener_->close();
      close_all();
    });
    work_.reset();
    if (stopped_future_.wait_for(kWait) != std::future_status::ready) {
      ADD_FAILURE() << "the io_context still had work after every connection was closed";
      io_.stop();
    }
    thread_.join();
  }

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::optional<Listener> listener_;
  std::promise<void> stopped_;
  std::future<void> stopped_future_ = stopped_.get_future();
  std::thread thread_;
};

// A Listener on 127.0.0.1:0 whose connections send every message straight back. One background
// thread runs the io_context; the destructor closes everything and joins it. It records every
// on_close call, so tests can check each connection closes exactly once.
class EchoServer {
 public:
  explicit EchoServer(Connection::Options options) : options_(options) {
    server_.start([this](asio::ip::tcp::socket s) { accept(std::move(s)); });
  }

  ~EchoServer() {
    server_.shut_down([this] {
      for (const auto& c : connections()) c->close("server stopped");
    });
  }

  uint16_t port() const { return server_.port(); }
  BlockingClient connect() const { return BlockingClient::connect({"127.0.0.1", port()}, kWait); }

  std::vector<std::shared_ptr<Connection>> connections() const {
    std::lock_guard lock(mu_);
    return connections_;
  }

  // The index-th accepted connection (in accept order), waiting for it; nullptr after kWait.
  std::shared_ptr<Connection> connection(std::size_t index) const {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, kWait, [&] { return connections_.size() > index; });
    return connections_.size() > index ? connections_[index] : nullptr;
  }

  // Waits until `n` on_close calls in all; false after kWait.
  bool wait_for_closes(std::size_t n) const {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, kWait, [&] { return close_calls_ >= n; });
  }

  std::map<uint64_t, int> close_counts() const {
    std::lock_guard lock(mu_);
    return close_counts_;
  }
  std::map<uint64_t, std::string> close_reasons() const {
    std::lock_guard lock(mu_);
    return close_reasons_;
  }
  std::size_t messages_echoed() const { return echoed_.load(); }

 private:
  void accept(asio::ip::tcp::socket socket) {
    auto connection = Connection::create(std::move(socket), options_);
    {
      std::lock_guard lock(mu_);
      connections_.push_back(connection);
    }
    cv_.notify_all();
    connection->start(
        [this](const std::shared_ptr<Connection>& c, Message m) {
          if (c->send(to_message(m.payload))) ++echoed_;
        },
        [this](const std::shared_ptr<Connection>& c, const std::string& reason) {
          {
            std::lock_guard lock(mu_);
            ++close_counts_[c->id()];
            close_reasons_[c->id()] = reason;
            ++close_calls_;
          }
          cv_.notify_all();
        });
  }

  LoopbackServer server_;
  Connection::Options options_;

  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::vector<std::shared_ptr<Connection>> connections_;
  std::map<uint64_t, int> close_counts_;
  std::map<uint64_t, std::string> close_reasons_;
  std::size_t close_calls_ = 0;
  std::atomic<std::size_t> echoed_{0};
};

Connection::Options small_limits() {
  Connection::Options o;
  o.max_frame_bytes = 4096;
  o.frame_timeout = 300ms;
  return o;
}

json heartbeat(int64_t queued) { return to_message(Heartbeat{queued, false}); }

// The next message, which must arrive within kWait.
Message next_message(BlockingClient& client) {
  std::optional<Message> m = client.receive(kWait);
  if (!m) throw std::runtime_error("no message within " + std::to_string(kWait.count()) + " ms");
  return std::move(*m);
}

// The peer has closed the connection: receive throws a plain runtime_error (not a timeout, not
// a malformed frame). With error_first, one Error frame before the close is allowed.
void expect_closed(BlockingClient& client, bool error_first = false) {
  try {
    std::optional<Message> m = client.receive(kWait);
    if (m && error_first && m->type == MessageType::Error) m = client.receive(kWait);
    ADD_FAILURE() << (m ? "expected the connection closed, got a message: " + to_message(m->payload).dump()
                        : "expected the connection closed, it is still open");
  } catch (const ProtocolError& e) {
    ADD_FAILURE() << "expected the connection closed, got a malformed frame: " << e.what();
  } catch (const std::runtime_error&) {
  }
}

// The server answers with an Error frame carrying `code`, then closes the connection.
void expect_error_then_close(BlockingClient& client, const std::string& code) {
  const Message m = next_message(client);
  ASSERT_EQ(m.type, MessageType::Error) << to_message(m.payload).dump();
  const ErrorMsg error = m.as<ErrorMsg>();
  EXPECT_EQ(error.code, code) << error.message;
  EXPECT_FALSE(error.task_id.has_value());
  expect_closed(client);
}

void expect_echo(BlockingClient& client, const json& message) {
  client.send(message);
  const Message m = next_message(client);
  EXPECT_EQ(to_message(m.payload), message);
}

TEST(Connection, EchoesAValidMessage) {
  EchoServer server(small_limits());
  BlockingClient client = server.connect();
  expect_echo(client, heartbeat(5));
  expect_echo(client, to_message(Submit{sample_request()}));
  client.send(heartbeat(6));
  const Message m = next_message(client);
  EXPECT_EQ(m.type, MessageType::Heartbeat);
  EXPECT_EQ(m.as<Heartbeat>().queued, 6);
  EXPECT_EQ(server.messages_echoed(), 3u);
}

TEST(Connection, AFrameOfExactlyTheLimitIsAccepted) {
  EchoServer server(small_limits());
  BlockingClient client = server.connect();
  json message = heartbeat(1);
  message["pad"] = "";
  message["pad"] = std::string(4096 - message.dump().size(), 'p');
  ASSERT_EQ(message.dump().size(), 4096u);
  client.send(message);
  // Unknown fields are ignored, so the echo (the decoded message, re-encoded) has no padding.
  EXPECT_EQ(to_message(next_message(client).payload), heartbeat(1));
}

TEST(Connection, GarbageBytesAreTooLargeThenClosed) {
  EchoServer server(small_limits());
  BlockingClient client = server.connect();
  client.send_raw("GET / HTTP/1.1\r\n\r\n");  // "GET " reads as a length of 1.2 GB
  expect_error_then_close(client, codes::kTooLarge);
}

TEST(Connection, AnOversizedLengthIsTooLargeThenClosed) {
  EchoServer server(small_limits());
  BlockingClient client = server.connect();
  client.send_raw(header_of(4097));
  expect_error_then_close(client, codes::kTooLarge);
}

TEST(Connection, AZeroLengthIsTooLargeThenClosed) {
  EchoServer server(small_limits());
  BlockingClient client = server.connect();
  client.send_raw(header_of(0));
  expect_error_then_close(client, codes::kTooLarge);
}

TEST(Connection, MalformedMessagesGetTheirErrorCodeThenClose) {
  EchoServer server(small_limits());
  const std::vector<std::pair<std::string, std::string>> cases{
      {"{oops", codes::kBadJson},
      {R"([1,2,3])", codes::kBadJson},
      {R"({"type":"Heartbeat","v":2})", codes::kBadVersion},
      {R"({"type":"Heartbeat"})", codes::kBadVersion},
      {R"({"type":"Bogus","v":1})", codes::kUnknownType},
      {submit_with(json::parse(R"({"model": "m", "prompt_ids": [[-1]]})")).dump(), codes::kBadMessage},
  };
  for (const auto& [body, code] : cases) {
    SCOPED_TRACE(body);
    BlockingClient client = server.connect();
    expect_echo(client, heartbeat(1));  // a good message first: the connection was fine until now
    client.send_raw(raw_frame(body));
    expect_error_then_close(client, code);
  }
  EXPECT_TRUE(server.wait_for_closes(cases.size()));
}

TEST(Connection, MessagesAfterABadFrameAreNotDelivered) {
  EchoServer server(small_limits());
  BlockingClient client = server.connect();
  // One write: a bad frame, then a valid one the server must ignore.
  client.send_raw(raw_frame("{oops") + encode_frame(heartbeat(1)));
  expect_error_then_close(client, codes::kBadJson);
  EXPECT_EQ(server.messages_echoed(), 0u);
}

TEST(Connection, ATruncatedFrameTimesOutThenCloses) {
  EchoServer server(small_limits());
  BlockingClient client = server.connect();
  client.send_raw(header_of(100) + std::string(10, 'x'));  // then silence
  expect_error_then_close(client, codes::kTimeout);
}

// A frame whose first byte arrived must be complete within frame_timeout: bytes trickling in
// must not keep postponing the deadline (or one slow client holds a connection forever).
TEST(Connection, AFrameDrippedByteByByteStillTimesOut) {
  EchoServer server(small_limits());  // frame_timeout 300 ms
  BlockingClient client = server.connect();
  client.send_raw(header_of(200));
  std::optional<Message> error;
  // 20 bytes 100 ms apart: 2 s in all, far past the deadline, yet the frame is never complete.
  for (int i = 0; i < 20 && !error; ++i) {
    try {
      client.send_raw("x");
    } catch (const std::runtime_error&) {
      break;  // the server closed; its Error frame is waiting
    }
    error = client.receive(100ms);
  }
  if (!error) error = client.receive(100ms);
  ASSERT_TRUE(error.has_value()) << "no timeout while the frame kept trickling in: each byte extended the deadline";
  EXPECT_EQ(error->type, MessageType::Error);
  EXPECT_EQ(error->as<ErrorMsg>().code, codes::kTimeout);
  expect_closed(client);
}

TEST(Connection, AnIdleClientTimesOut) {
  Connection::Options options = small_limits();
  options.idle_timeout = 200ms;
  EchoServer server(options);
  BlockingClient client = server.connect();
  expect_error_then_close(client, codes::kTimeout);
}

TEST(Connection, ATalkingClientIsNotIdle) {
  Connection::Options options = small_limits();
  options.idle_timeout = 500ms;
  EchoServer server(options);
  BlockingClient client = server.connect();
  // About 1 s of traffic, one message every 30 ms: two idle timeouts' worth, never idle for one.
  for (int i = 0; i < 32; ++i) {
    expect_echo(client, heartbeat(i));
    std::this_thread::sleep_for(30ms);
  }
  expect_error_then_close(client, codes::kTimeout);  // and once it falls silent, it is closed
}

TEST(Connection, SetIdleTimeoutAppliesToARunningConnection) {
  EchoServer server(small_limits());  // no idle timeout
  BlockingClient client = server.connect();
  expect_echo(client, heartbeat(1));
  const auto connection = server.connection(0);
  ASSERT_NE(connection, nullptr);
  connection->set_idle_timeout(100ms);
  expect_error_then_close(client, codes::kTimeout);
}

TEST(Connection, OneBadClientDoesNotDisturbTheOthers) {
  EchoServer server(small_limits());
  BlockingClient good = server.connect();
  expect_echo(good, heartbeat(0));

  // A client stuck mid-frame for the whole test...
  BlockingClient stalled = server.connect();
  stalled.send_raw(header_of(100) + "xyz");

  // ...and another that keeps connecting and sending garbage.
  std::atomic<bool> stop{false};
  std::atomic<int> errors_received{0}, attacks{0};
  std::thread attacker([&] {
    const std::vector<std::string> garbage{"GET / HTTP/1.1\r\n\r\n", raw_frame("{oops"), raw_frame(R"({"type":"X","v":1})"),
                                           header_of(0)};
    for (std::size_t i = 0; !stop.load(); ++i) {
      try {
        BlockingClient bad = server.connect();
        bad.send_raw(garbage[i % garbage.size()]);
        ++attacks;
        const std::optional<Message> m = bad.receive(kWait);
        if (m && m->type == MessageType::Error) ++errors_received;
      } catch (const std::exception&) {
      }
    }
  });

  for (int i = 1; i <= 200; ++i) {
    good.send(heartbeat(i));
    const Message m = next_message(good);
    ASSERT_EQ(m.type, MessageType::Heartbeat);
    ASSERT_EQ(m.as<Heartbeat>().queued, i);
  }
  stop = true;
  attacker.join();
  EXPECT_GT(attacks.load(), 0);
  EXPECT_EQ(errors_received.load(), attacks.load());

  expect_error_then_close(stalled, codes::kTimeout);
  expect_echo(good, heartbeat(1000));  // still served after its neighbours were dropped
}

TEST(Connection, CoalescedFramesAreDeliveredInOrder) {
  EchoServer server(small_limits());
  BlockingClient client = server.connect();
  client.send_raw(encode_frame(heartbeat(1)) + encode_frame(heartbeat(2)) + encode_frame(heartbeat(3)));
  for (int i = 1; i <= 3; ++i) EXPECT_EQ(next_message(client).as<Heartbeat>().queued, i);

  // A whole frame plus the first half of the next; the rest follows in a later write.
  const std::string second = encode_frame(to_message(Submit{sample_request()}));
  client.send_raw(encode_frame(heartbeat(4)) + second.substr(0, second.size() / 2));
  EXPECT_EQ(next_message(client).as<Heartbeat>().queued, 4);
  std::this_thread::sleep_for(20ms);
  client.send_raw(second.substr(second.size() / 2));
  EXPECT_EQ(to_message(next_message(client).payload), to_message(Submit{sample_request()}));
}

TEST(Connection, AFrameSplitByteByByteIsDelivered) {
  EchoServer server(small_limits());
  BlockingClient client = server.connect();
  const json message = to_message(Accepted{5, "req-split"});
  for (const char c : encode_frame(message)) client.send_raw(std::string(1, c));
  EXPECT_EQ(to_message(next_message(client).payload), message);
}

TEST(Connection, OnCloseRunsExactlyOncePerConnection) {
  EchoServer server(small_limits());

  BlockingClient leaves = server.connect();  // closes its end
  expect_echo(leaves, heartbeat(1));
  BlockingClient misbehaves = server.connect();  // sends garbage: fail()
  expect_echo(misbehaves, heartbeat(2));
  BlockingClient mid_frame = server.connect();  // closes in the middle of a frame
  expect_echo(mid_frame, heartbeat(3));
  BlockingClient dropped = server.connect();  // the server closes it, several ways at once
  expect_echo(dropped, heartbeat(4));
  const auto connections = server.connections();
  ASSERT_EQ(connections.size(), 4u);

  leaves.close();
  misbehaves.send_raw("GET / HTTP/1.1\r\n\r\n");
  expect_error_then_close(misbehaves, codes::kTooLarge);
  mid_frame.send_raw(header_of(50) + "abc");
  std::this_thread::sleep_for(50ms);
  mid_frame.close();
  connections[3]->fail(codes::kShuttingDown, "bye");
  connections[3]->close("closed twice");
  connections[3]->close("closed thrice");
  expect_closed(dropped, /*error_first=*/true);  // the close may or may not let the Error out first

  ASSERT_TRUE(server.wait_for_closes(4));
  std::this_thread::sleep_for(100ms);  // room for a wrong second call
  const auto counts = server.close_counts();
  ASSERT_EQ(counts.size(), 4u);
  for (const auto& c : connections) EXPECT_EQ(counts.at(c->id()), 1) << "connection " << c->id();

  const auto reasons = server.close_reasons();
  EXPECT_THAT(reasons.at(connections[0]->id()), HasSubstr("closed by peer"));
  EXPECT_THAT(reasons.at(connections[1]->id()), HasSubstr(codes::kTooLarge));
  EXPECT_THAT(reasons.at(connections[2]->id()), HasSubstr("truncated"));
  for (const auto& c : connections) EXPECT_TRUE(c->closed());
}

TEST(Connection, ServerPushesAndSendAfterCloseReturnsFalse) {
  EchoServer server(small_limits());
  BlockingClient client = server.connect();
  expect_echo(client, heartbeat(1));
  const auto connection = server.connection(0);
  ASSERT_NE(connection, nullptr);

  // A message the server sends on its own reaches the client.
  EXPECT_TRUE(connection->send(to_message(Hello{"nonce", "test"})));
  EXPECT_EQ(next_message(client).type, MessageType::Hello);
  // One over the frame limit is refused and not sent; the connection stays usable.
  EXPECT_EQ(protocol_code([&] { connection->send({{"type", "Heartbeat"}, {"v", 1}, {"pad", std::string(5000, 'p')}}); }),
            codes::kTooLarge);
  expect_echo(client, heartbeat(2));

  EXPECT_FALSE(connection->closed());
  connection->close("test over");
  EXPECT_TRUE(connection->closed());
  EXPECT_FALSE(connection->send(heartbeat(3)));
  expect_closed(client);
  EXPECT_TRUE(server.wait_for_closes(1));
  EXPECT_FALSE(connection->send(heartbeat(4)));
}

TEST(Connection, SendAfterFailReturnsFalse) {
  EchoServer server(small_limits());
  BlockingClient client = server.connect();
  expect_echo(client, heartbeat(1));
  const auto connection = server.connection(0);
  ASSERT_NE(connection, nullptr);
  connection->fail(codes::kShuttingDown, "draining");
  expect_error_then_close(client, codes::kShuttingDown);
  EXPECT_TRUE(server.wait_for_closes(1));
  EXPECT_FALSE(connection->send(heartbeat(2)));
}

TEST(Listener, RefusesAnAddressInUse) {
  EchoServer server(small_limits());
  asio::io_context io;
  const std::string message = runtime_error_of(
      [&] { Listener second(io, {"127.0.0.1", server.port()}, [](asio::ip::tcp::socket) {}); });
  EXPECT_THAT(message, HasSubstr("cannot listen on 127.0.0.1:" + std::to_string(server.port())));
}

TEST(BlockingClient, ConnectToAClosedPortFails) {
  uint16_t port = 0;
  {
    EchoServer server(small_limits());
    port = server.port();
  }
  const std::string message =
      runtime_error_of([&] { BlockingClient::connect({"127.0.0.1", port}, kWait); });
  EXPECT_THAT(message, HasSubstr("cannot connect to 127.0.0.1:" + std::to_string(port)));
}

TEST(BlockingClient, ReceiveTimesOutWithNothing) {
  EchoServer server(small_limits());
  BlockingClient client = server.connect();
  EXPECT_FALSE(client.receive(50ms).has_value());
  expect_echo(client, heartbeat(1));  // and the connection still works afterwards
}

// A poll that times out between the bytes of a header keeps them: the next receive reads the
// frame whole (a client polling for cancellation must never lose its place in the stream).
TEST(BlockingClient, APollThatTimesOutMidFrameLosesNoBytes) {
  asio::io_context io;
  asio::ip::tcp::acceptor acceptor(io, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const auto port = acceptor.local_endpoint().port();
  const std::string frame = encode_frame(heartbeat(41)) + encode_frame(heartbeat(42));
  std::promise<void> half_sent, go_on;
  std::thread server([&] {
    asio::ip::tcp::socket s(io);
    acceptor.accept(s);
    asio::write(s, asio::buffer(frame.data(), 2));  // half a header
    half_sent.set_value();
    go_on.get_future().wait();
    asio::write(s, asio::buffer(frame.data() + 2, frame.size() - 2));
    std::this_thread::sleep_for(200ms);
  });
  BlockingClient client = BlockingClient::connect({"127.0.0.1", port}, kWait);
  half_sent.get_future().wait();
  EXPECT_FALSE(client.receive(30ms).has_value());
  EXPECT_FALSE(client.receive(30ms).has_value());
  go_on.set_value();
  const Message first = next_message(client);
  ASSERT_EQ(first.type, MessageType::Heartbeat);
  EXPECT_EQ(first.as<Heartbeat>().queued, 41);
  const Message second = next_message(client);  // it came in the same read: kept for this call
  EXPECT_EQ(second.as<Heartbeat>().queued, 42);
  server.join();
}

// ---------------------------------------------------------------------------------------------
// A worker's coordinator session, against a scripted coordinator

using Clock = std::chrono::steady_clock;

// Plays the coordinator's side on 127.0.0.1:0 as a test scripts it: greets every connection with
// a Hello (or, with hang_up_at_once, closes it as soon as it is accepted), keeps what each one
// sends for the test to read, and answers heartbeats while answer_heartbeats is set.
class ScriptedCoordinator {
 public:
  std::atomic<bool> hang_up_at_once{false};
  std::atomic<bool> answer_heartbeats{true};

  ScriptedCoordinator() {
    server_.start([this](asio::ip::tcp::socket s) { accept(std::move(s)); });
  }

  ~ScriptedCoordinator() {
    server_.shut_down([this] {
      std::lock_guard lock(mu_);
      for (const auto& p : peers_)
        if (p.connection) p.connection->close("test over");
    });
  }

  Endpoint at() const { return {"127.0.0.1", server_.port()}; }

  // Waits until `n` connections were accepted; false after `timeout`.
  bool wait_for_connections(std::size_t n, std::chrono::milliseconds timeout = kWait) const {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return peers_.size() >= n; });
  }
  std::size_t connections() const {
    std::lock_guard lock(mu_);
    return peers_.size();
  }
  Clock::time_point accepted_at(std::size_t i) const {
    std::lock_guard lock(mu_);
    return peers_.at(i).accepted_at;
  }

  // The first message of `type` connection i has sent and the test has not taken yet, waiting
  // up to `timeout` for it.
  std::optional<Message> next(std::size_t i, MessageType type, std::chrono::milliseconds timeout = kWait) {
    std::unique_lock lock(mu_);
    std::optional<Message> found;
    cv_.wait_for(lock, timeout, [&] {
      if (peers_.size() <= i) return false;
      auto& inbox = peers_[i].inbox;
      const auto it = std::find_if(inbox.begin(), inbox.end(), [&](const Message& m) { return m.type == type; });
      if (it == inbox.end()) return false;
      found = std::move(*it);
      inbox.erase(it);
      return true;
    });
    return found;
  }

  bool closed(std::size_t i, std::chrono::milliseconds timeout = kWait) const {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return peers_.size() > i && peers_[i].closed; });
  }

  // Waits for connection i's Register and checks its proof over the Hello's nonce.
  Register expect_register(std::size_t i, const Token& token) {
    const auto m = next(i, MessageType::Register);
    if (!m) throw std::runtime_error("no Register on connection " + std::to_string(i));
    Register reg = m->as<Register>();
    EXPECT_TRUE(token.verify(kWorkerProofLabel, nonce(i), reg.name, reg.proof)) << "the worker's proof is wrong";
    return reg;
  }

  // Answers a Register, proving `token` over the worker's nonce.
  void registered(std::size_t i, const Register& reg, const Token& token, int64_t heartbeat_ms) {
    Registered r;
    r.worker_id = static_cast<int64_t>(i) + 1;
    r.proof = token.proof(kCoordinatorProofLabel, reg.nonce, reg.name);
    r.heartbeat_ms = heartbeat_ms;
    send(i, to_message(r));
  }

  void send(std::size_t i, const json& message) {
    std::lock_guard lock(mu_);
    ASSERT_TRUE(peers_.at(i).connection->send(message));
  }
  void close(std::size_t i) {
    std::lock_guard lock(mu_);
    peers_.at(i).connection->close("closed by the script");
  }

 private:
  struct Peer {
    std::shared_ptr<Connection> connection;  // null when hung up at once
    std::string nonce;
    Clock::time_point accepted_at;
    std::deque<Message> inbox;
    bool closed = false;
  };

  std::string nonce(std::size_t i) const {
    std::lock_guard lock(mu_);
    return peers_.at(i).nonce;
  }

  void accept(asio::ip::tcp::socket socket) {
    std::lock_guard lock(mu_);
    const std::size_t index = peers_.size();
    Peer& peer = peers_.emplace_back();
    peer.accepted_at = Clock::now();
    cv_.notify_all();
    if (hang_up_at_once) {
      asio::error_code ec;
      socket.close(ec);
      peer.closed = true;
      return;
    }
    peer.connection = Connection::create(std::move(socket), Connection::Options{});
    peer.nonce = make_nonce();
    peer.connection->send(to_message(Hello{peer.nonce, "scripted"}));
    peer.connection->start(
        [this, index](const std::shared_ptr<Connection>& c, Message m) {
          if (m.type == MessageType::Heartbeat && answer_heartbeats) c->send(to_message(Heartbeat{}));
          std::lock_guard lock(mu_);
          peers_[index].inbox.push_back(std::move(m));
          cv_.notify_all();
        },
        [this, index](const std::shared_ptr<Connection>&, const std::string&) {
          std::lock_guard lock(mu_);
          peers_[index].closed = true;
          cv_.notify_all();
        });
  }

  LoopbackServer server_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::deque<Peer> peers_;  // a deque: a Peer stays put while others are added
};

// What a running session's handlers have seen.
struct SessionEvents {
  int registrations = 0, losses = 0;
  std::vector<std::pair<Assign, WorkerSession::ConnectionId>> assigns;
  std::vector<int64_t> cancels;
  bool finished = false;  // run() returned
  std::string error;      // what run() threw
};

// A WorkerSession running on a thread of its own, registering as "w1" with one model. Its
// handlers record what they see; it reports 3 tasks queued and 2 dropped when a link is lost.
class RunningSession {
 public:
  RunningSession(const Endpoint& at, const Token& token) {
    WorkerSessionOptions o;
    o.coordinator = at;
    Register reg;
    reg.name = "w1";
    auto& model = reg.models.emplace_back().row;
    model.name = "m", model.fingerprint = "fp-m", model.dtype = "f32";
    model.layers = 2, model.hidden = 64, model.intermediate = 128, model.heads = 4, model.kv_heads = 2, model.vocab = 256;
    WorkerSession::Handlers h;
    h.on_assign = [this](Assign a, WorkerSession::ConnectionId from) { record([&](SessionEvents& e) { e.assigns.emplace_back(std::move(a), from); }); };
    h.on_cancel = [this](const Cancel& c) { record([&](SessionEvents& e) { e.cancels.push_back(c.task_id); }); };
    h.on_registered = [this] { record([](SessionEvents& e) { ++e.registrations; }); };
    h.on_lost = [this] {
      record([](SessionEvents& e) { ++e.losses; });
      return std::size_t{2};
    };
    h.queued = [] { return int64_t{3}; };
    session_ = std::make_unique<WorkerSession>(o, token, reg, h);
    thread_ = std::thread([this] {
      std::string error;
      try {
        session_->run();
      } catch (const std::exception& e) {
        error = e.what();
      }
      record([&](SessionEvents& e) {
        e.finished = true;
        e.error = error;
      });
    });
  }

  ~RunningSession() {
    session_->stop();
    thread_.join();
  }

  WorkerSession& operator*() { return *session_; }

  // Waits until `done` holds for what the handlers have seen; false after `timeout`.
  bool wait_until(const std::function<bool(const SessionEvents&)>& done, std::chrono::milliseconds timeout = kWait) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return done(events_); });
  }
  SessionEvents events() const {
    std::lock_guard lock(mu_);
    return events_;
  }

 private:
  void record(const std::function<void(SessionEvents&)>& change) {
    {
      std::lock_guard lock(mu_);
      change(events_);
    }
    cv_.notify_all();
  }

  mutable std::mutex mu_;
  std::condition_variable cv_;
  SessionEvents events_;
  std::unique_ptr<WorkerSession> session_;
  std::thread thread_;
};

const Token& session_token() {
  static const Token token = Token::from_secret(kSecret);
  return token;
}

TEST(WorkerSession, RegistersWithAValidProofThenServesAssignsAndCancels) {
  ScriptedCoordinator coordinator;
  RunningSession session(coordinator.at(), session_token());
  const Register reg = coordinator.expect_register(0, session_token());
  EXPECT_EQ(reg.name, "w1");
  ASSERT_EQ(reg.models.size(), 1u);
  EXPECT_EQ(reg.models[0].row.name, "m");
  EXPECT_THAT(reg.nonce, MatchesRegex("[0-9a-f]{64}"));
  coordinator.registered(0, reg, session_token(), 100);
  ASSERT_TRUE(session.wait_until([](const SessionEvents& e) { return e.registrations == 1; }));

  const auto beat = coordinator.next(0, MessageType::Heartbeat);
  ASSERT_TRUE(beat);
  EXPECT_EQ(beat->as<Heartbeat>().queued, 3);

  Assign assign;
  assign.task_id = 11;
  assign.attempt = 2;
  assign.arm = "kv";
  assign.model = "m";
  assign.prompt_ids = {{1, 2, 3}};
  coordinator.send(0, to_message(assign));
  coordinator.send(0, to_message(Cancel{12, ""}));
  ASSERT_TRUE(session.wait_until([](const SessionEvents& e) { return !e.assigns.empty() && !e.cancels.empty(); }));
  const auto [received, from] = session.events().assigns.front();
  EXPECT_EQ(received.task_id, 11);
  EXPECT_EQ(received.attempt, 2);
  EXPECT_EQ(received.prompt_ids, assign.prompt_ids);
  EXPECT_EQ(session.events().cancels, std::vector<int64_t>{12});

  Result result;
  result.task_id = 11;
  result.attempt = 2;
  result.report.ok = true;
  result.report.tokens = {{7, 8}};
  Tokens tokens{11, 2, "", {0}, {{7}}};
  EXPECT_FALSE((*session).send_tokens(tokens, from + 1000)) << "tokens go back only on the connection that assigned the task";
  EXPECT_TRUE((*session).send_tokens(tokens, from));
  const auto chunk = coordinator.next(0, MessageType::Tokens);
  ASSERT_TRUE(chunk);
  EXPECT_TRUE(chunk->as<Tokens>() == tokens);
  EXPECT_FALSE(coordinator.next(0, MessageType::Tokens, 100ms)) << "one chunk, sent once";

  EXPECT_FALSE((*session).send_result(result, from + 1000)) << "a result goes back only on the connection that assigned it";
  EXPECT_TRUE((*session).send_result(result, from));
  const auto answer = coordinator.next(0, MessageType::Result);
  ASSERT_TRUE(answer);
  const Result got = answer->as<Result>();
  EXPECT_EQ(got.task_id, 11);
  EXPECT_EQ(got.attempt, 2);
  EXPECT_EQ(got.report.tokens, result.report.tokens);
  EXPECT_FALSE(coordinator.next(0, MessageType::Result, 100ms)) << "one result, sent once";
}

TEST(WorkerSession, ACoordinatorWithAWrongProofIsFatalAndNotRetried) {
  ScriptedCoordinator coordinator;
  RunningSession session(coordinator.at(), session_token());
  const Register reg = coordinator.expect_register(0, session_token());
  coordinator.registered(0, reg, Token::from_secret("another-secret-of-enough-length"), 100);
  ASSERT_TRUE(session.wait_until([](const SessionEvents& e) { return e.finished; }));
  EXPECT_THAT(session.events().error, HasSubstr("could not prove it holds the token"));
  EXPECT_EQ(session.events().registrations, 0);
  EXPECT_FALSE(coordinator.wait_for_connections(2, 300ms)) << "a wrong proof must not be retried";
}

TEST(WorkerSession, ARefusedTokenIsFatalAndNotRetried) {
  ScriptedCoordinator coordinator;
  RunningSession session(coordinator.at(), session_token());
  coordinator.expect_register(0, session_token());
  coordinator.send(0, to_message(ErrorMsg{codes::kAuthFailed, "bad proof", std::nullopt}));
  ASSERT_TRUE(session.wait_until([](const SessionEvents& e) { return e.finished; }));
  EXPECT_THAT(session.events().error, HasSubstr("refused the token: bad proof"));
  EXPECT_FALSE(coordinator.wait_for_connections(2, 300ms)) << "a refused token must not be retried";
}

// After a registered link drops, the session reconnects within the initial 100 ms backoff and
// registers again; while the coordinator keeps hanging up, the wait doubles (200, 400 ms).
TEST(WorkerSession, ReconnectsWithDoublingBackoffAfterTheCoordinatorCloses) {
  ScriptedCoordinator coordinator;
  RunningSession session(coordinator.at(), session_token());
  coordinator.registered(0, coordinator.expect_register(0, session_token()), session_token(), 1000);
  ASSERT_TRUE(session.wait_until([](const SessionEvents& e) { return e.registrations == 1; }));

  coordinator.close(0);
  ASSERT_TRUE(session.wait_until([](const SessionEvents& e) { return e.losses == 1; }));
  coordinator.registered(1, coordinator.expect_register(1, session_token()), session_token(), 1000);
  ASSERT_TRUE(session.wait_until([](const SessionEvents& e) { return e.registrations == 2; }));

  coordinator.hang_up_at_once = true;
  const auto closed_at = Clock::now();
  coordinator.close(1);
  ASSERT_TRUE(coordinator.wait_for_connections(5));
  const auto ms = [](Clock::duration d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); };
  EXPECT_GE(ms(coordinator.accepted_at(2) - closed_at), 100);  // the backoff restarted at 100 ms on registering
  EXPECT_GE(ms(coordinator.accepted_at(3) - coordinator.accepted_at(2)), 200);
  EXPECT_GE(ms(coordinator.accepted_at(4) - coordinator.accepted_at(3)), 400);
  EXPECT_EQ(session.events().losses, 2) << "only registered links are lost; the hung-up attempts never registered";
  EXPECT_FALSE(session.events().finished);
}

// A coordinator that stops answering heartbeats without closing the socket (a frozen host) is
// left after 4 x heartbeat_ms, at least 2 s, and the session connects again.
TEST(WorkerSession, LeavesASilentCoordinatorAndConnectsAgain) {
  ScriptedCoordinator coordinator;
  coordinator.answer_heartbeats = false;
  RunningSession session(coordinator.at(), session_token());
  coordinator.registered(0, coordinator.expect_register(0, session_token()), session_token(), 100);
  ASSERT_TRUE(session.wait_until([](const SessionEvents& e) { return e.registrations == 1; }));
  const auto registered_at = Clock::now();

  ASSERT_TRUE(session.wait_until([](const SessionEvents& e) { return e.losses == 1; }, 5000ms));
  const auto silent_for = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - registered_at);
  EXPECT_GE(silent_for.count(), 1900) << "the silence limit is at least 2 s, whatever heartbeat_ms says";
  const auto error = coordinator.next(0, MessageType::Error);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->as<ErrorMsg>().code, codes::kTimeout);
  int beats = 0;
  while (coordinator.next(0, MessageType::Heartbeat, 0ms)) ++beats;
  EXPECT_GE(beats, 5) << "heartbeats went out every 100 ms while the coordinator was silent";
  EXPECT_TRUE(coordinator.wait_for_connections(2));
}

}  // namespace
}  // namespace eesched::net
