// Writes the fuzzers' seed corpus and dictionary from the real encoders (net::to_message,
// net::encode_frame), so the seeds follow the protocol when it changes:
//   OUT/message/<Type>-<variant>.json   one frame body per message variant (fuzz_message)
//   OUT/frame/<Type>-<variant>.frame    the same as whole frames, plus stream.frame: every
//                                       variant in one byte stream (fuzz_frame)
//   OUT/eesched.dict                    a libFuzzer dictionary: every field name and type name
//                                       the encoders wrote, every error code and a few JSON
//                                       edge values
// Every seed is checked to parse and read back before it is written.
// Usage: make_seeds OUT
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "net/messages.h"
#include "net/protocol.h"

namespace {

namespace net = eesched::net;
namespace data = eesched::data;
using nlohmann::json;

struct Seed {
  std::string name;  // <Type>-<variant>
  json message;
};

std::vector<Seed> seeds() {
  std::vector<Seed> out;
  const auto add = [&](const std::string& variant, const auto& m) {
    const json j = net::to_message(m);
    out.push_back({j.at("type").get<std::string>() + "-" + variant, j});
  };

  add("full", net::Hello{"9f2c4e1a7b3d5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8", "coordinator@10.0.0.1:7070"});
  add("no-server", net::Hello{"00ff", ""});

  net::Register reg;
  reg.name = "box/threads=8";
  reg.hardware = {"box", "Intel(R) Xeon(R) CPU @ 2.20GHz", 8, 123.5, 17.25, int64_t{64} << 30, int64_t{40} << 30,
                  "2024-01-02T03:04:05Z"};
  net::ModelInfo target;
  target.row = {0, "llama-tiny", "sha256:7d1a", "llama", 12, 768, 3072, 12, 4, 32000, 0, 110000000, 440000000, "f32", true, {}};
  target.key_fingerprint = "key-1f3a";
  net::ModelInfo draft;
  draft.row = {0, "qwen-draft", "sha256:0b9e", "qwen3", 2, 256, 1024, 4, 2, 32000, 128, 9000000, 18000000, "bf16", true, {}};
  draft.key_fingerprint = "key-1f3a";
  draft.draft = true;
  reg.models = {target, draft};
  reg.nonce = "5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d";
  reg.proof = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
  add("two-models", reg);
  reg.models.clear();
  reg.dry_run = true;
  add("dry-run", reg);

  add("full", net::Registered{42, "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00", 250});
  add("idle", net::Heartbeat{0, false});
  add("busy", net::Heartbeat{3, false});
  add("draining", net::Heartbeat{2, true});

  net::TaskRequest task;
  task.request_id = "req-7f3e";
  task.model = "llama-tiny";
  task.key_fingerprint = "key-1f3a";
  task.prompt_ids = {{1, 15043, 29892, 920}, {1, 306, 626}};
  task.generation.stop_ids = {2, 13};
  task.generation.max_new_tokens = 64;
  task.generation.temperature = 0.7;
  task.generation.top_k = 40;
  task.generation.top_p = 0.9;
  task.generation.seed = 18446744073709551615ull;
  task.quality = data::Quality::Tolerant;
  task.arm = "kv+spec4";
  add("full", net::Submit{task});
  net::TaskRequest minimal;
  minimal.model = "llama-tiny";
  minimal.prompt_ids = {{1}};
  add("minimal", net::Submit{minimal});

  add("full", net::Accepted{17, "req-7f3e"});
  add("no-request-id", net::Accepted{18, ""});

  net::Assign assign;
  assign.task_id = 17;
  assign.attempt = 2;
  assign.arm = "kv+spec4";
  assign.model = "llama-tiny";
  assign.draft = "llama-draft";
  assign.prompt_ids = task.prompt_ids;
  assign.generation = task.generation;  // the client's, unchanged
  assign.time_limit_ms = 30000;
  add("full", assign);

  add("from-worker", net::Tokens{17, 2, "", {0, 0}, {{4013}, {338}}});
  add("to-client", net::Tokens{17, 2, "req-7f3e", {1, 1}, {{338, 263}, {}}});

  net::Result from_worker;
  from_worker.task_id = 17;
  from_worker.attempt = 2;
  from_worker.report.ok = true;
  from_worker.report.tokens = {{4013, 338, 263}, {}};
  from_worker.report.latency_ms = 812.5;
  from_worker.report.ttft_ms = 95.25;
  from_worker.report.ms_per_token = 11.75;
  from_worker.report.tokens_per_s = 85.1;
  from_worker.report.new_tokens = 3;
  from_worker.report.peak_rss_bytes = int64_t{1} << 31;
  from_worker.report.acceptance_rate = 0.625;
  from_worker.report.started_at = "2024-01-02T03:04:05Z";
  from_worker.report.ended_at = "2024-01-02T03:04:06Z";
  add("from-worker", from_worker);
  net::Result to_client = from_worker;
  to_client.request_id = "req-7f3e";
  to_client.status = "done";
  to_client.worker = "box/threads=8";
  to_client.arm = "kv+spec4";
  to_client.explored = true;
  to_client.attempts = 2;
  to_client.predicted_ms = 790.0;
  add("to-client", to_client);
  net::Result failed;
  failed.task_id = 18;
  failed.report.ok = false;
  failed.report.error = "timeout after 30000 ms";
  failed.status = "failed";
  add("failed", failed);

  add("ask", net::Status{});
  add("two-keys", net::StatusReply{3, 5, {{"llama-tiny", "key-1", 2, 16}, {"llama-tiny", "key-2", 1, 1}}});
  add("by-task-id", net::Cancel{17, ""});
  add("by-request-id", net::Cancel{0, "req-7f3e"});

  add("about-task", net::ErrorMsg{net::codes::kTaskFailed, "all attempts failed", 17});
  add("general", net::ErrorMsg{net::codes::kTooLarge, "frame of 1195725856 bytes exceeds the limit of 16777216", std::nullopt});
  return out;
}

void collect_keys(const json& j, std::set<std::string>& keys) {
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      keys.insert(it.key());
      collect_keys(it.value(), keys);
    }
  } else if (j.is_array()) {
    for (const auto& x : j) collect_keys(x, keys);
  }
}

// A libFuzzer dictionary entry: a quoted string, with quotes, backslashes and unprintables escaped.
std::string dict_entry(const std::string& token) {
  std::string s = "\"";
  for (const unsigned char c : token) {
    if (c == '"' || c == '\\') {
      s += '\\';
      s += static_cast<char>(c);
    } else if (c < 0x20 || c >= 0x7f) {
      char buf[5];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      s += buf;
    } else {
      s += static_cast<char>(c);
    }
  }
  return s + "\"";
}

void write_file(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << bytes;
  if (!f) throw std::runtime_error("cannot write " + path.string());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: make_seeds OUT\n";
    return 2;
  }
  const std::filesystem::path out = argv[1];
  std::filesystem::remove_all(out / "message");
  std::filesystem::remove_all(out / "frame");
  std::filesystem::create_directories(out / "message");
  std::filesystem::create_directories(out / "frame");

  std::set<std::string> types_seen;
  std::set<std::string> keys;
  std::string stream;
  for (const Seed& s : seeds()) {
    const std::string frame = net::encode_frame(s.message);
    const std::string body = frame.substr(net::kFrameHeaderBytes);
    // A seed the parser refuses would only teach the fuzzer the refusal path.
    const net::Message parsed = net::parse_message(body);
    types_seen.insert(net::message_type_name(parsed.type));
    write_file(out / "message" / (s.name + ".json"), body);
    write_file(out / "frame" / (s.name + ".frame"), frame);
    stream += frame;
    collect_keys(s.message, keys);
  }
  write_file(out / "frame" / "stream.frame", stream);
  for (int t = 0; t <= static_cast<int>(net::MessageType::Error); ++t) {
    const std::string name = net::message_type_name(static_cast<net::MessageType>(t));
    if (!types_seen.count(name)) {
      std::cerr << "make_seeds: no seed of type " << name << "\n";
      return 1;
    }
  }

  std::vector<std::string> dict;
  for (const auto& k : keys) dict.push_back("\"" + k + "\":");
  for (const auto& t : types_seen) dict.push_back("\"" + t + "\"");
  for (const char* code : {net::codes::kTooLarge, net::codes::kBadJson, net::codes::kBadVersion, net::codes::kUnknownType,
                           net::codes::kBadMessage, net::codes::kUnexpected, net::codes::kAuthFailed, net::codes::kTimeout,
                           net::codes::kShuttingDown, net::codes::kNoWorker, net::codes::kTaskFailed, net::codes::kNotFound,
                           net::codes::kOverloaded, net::codes::kInternal})
    dict.push_back("\"" + std::string(code) + "\"");
  for (const char* v : {"\"exact\"", "\"tolerant\"", "\"done\"", "\"failed\"", "\"cancelled\"", "\"v\":1", "true", "false",
                        "null", "[]", "{}", "[[]]", "-1", "0", "-0", "0.0", "1e308", "-1e308", "5e-324", "2147483648",
                        "4294967296", "9007199254740993", "9223372036854775807", "9223372036854775808",
                        "-9223372036854775808", "-9223372036854775809", "18446744073709551615", "18446744073709551616",
                        "1048576", "1048577", "\\u0000", "\\ud83d\\ude00", "\xc3\xa9", "\xf0\x9f\x98\x80"})
    dict.push_back(v);
  std::string text = "# libFuzzer dictionary for eesched's frames, written by tests/fuzz/make_seeds from the encoders.\n";
  for (const auto& d : dict) text += dict_entry(d) + "\n";
  write_file(out / "eesched.dict", text);
  std::cout << "make_seeds: " << seeds().size() << " messages of " << types_seen.size() << " types, " << dict.size()
            << " dictionary entries -> " << out.string() << "\n";
  return 0;
}
