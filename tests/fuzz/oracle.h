#pragma once
// The properties both fuzz targets check, through net/'s public API only (net/protocol.h,
// net/messages.h). A violated property prints what and why to stderr and aborts, so libFuzzer
// records the input under build-fuzz/artifacts/ as a crash. Anything else that goes wrong
// (an exception other than ProtocolError, an ASan or UBSan report, a leak) is a crash as well.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "net/messages.h"
#include "net/protocol.h"

namespace eesched::fuzz {

using nlohmann::json;
namespace net = eesched::net;

[[noreturn]] inline void fail(const std::string& what) {
  std::fprintf(stderr, "\n==eesched-fuzz== PROPERTY VIOLATED: %s\n", what.c_str());
  std::abort();
}

// A short, printable excerpt of some JSON for a report.
inline std::string excerpt(const json& j) {
  std::string s = j.dump(-1, ' ', true, json::error_handler_t::replace);
  return s.size() <= 600 ? s : s.substr(0, 600) + "...";
}

// The codes parse_message may refuse a body with (docs/protocol.md's table, after too_large).
inline bool is_parse_code(const std::string& code) {
  return code == net::codes::kBadJson || code == net::codes::kBadVersion || code == net::codes::kUnknownType ||
         code == net::codes::kBadMessage;
}

// Calls every typed reader with its type: f.template operator()<T>(MessageType).
template <class F>
void for_each_message_type(F&& f) {
  using MT = net::MessageType;
  f.template operator()<net::Hello>(MT::Hello);
  f.template operator()<net::Register>(MT::Register);
  f.template operator()<net::Registered>(MT::Registered);
  f.template operator()<net::Heartbeat>(MT::Heartbeat);
  f.template operator()<net::Submit>(MT::Submit);
  f.template operator()<net::Accepted>(MT::Accepted);
  f.template operator()<net::Assign>(MT::Assign);
  f.template operator()<net::Tokens>(MT::Tokens);
  f.template operator()<net::Result>(MT::Result);
  f.template operator()<net::Cancel>(MT::Cancel);
  f.template operator()<net::ErrorMsg>(MT::Error);
  f.template operator()<net::Status>(MT::Status);
  f.template operator()<net::StatusReply>(MT::StatusReply);
}

// ---------------------------------------------------------------------------------------------
// Nesting: parse_message refuses a body nested deeper than net's limit (32) before building it
// (a fuzzing finding: a frame of "[[[[..." cost the DOM parser 620 MB). The same depth, measured
// on the parsed value.
inline int nesting(const json& j) {
  int deepest = 0;
  if (j.is_structured())
    for (const auto& v : j) deepest = std::max(deepest, nesting(v));
  return j.is_structured() ? deepest + 1 : 0;
}
inline constexpr int kMaxNesting = 32;

// Fixed findings (issue 17), whose reproducers tests/fuzz/regressions/ replays on every run:
//   K1 an integer above INT64_MAX wrapped into an int64 field (net/messages.cpp field<T>);
//   K2 hardware integers read from floats (1e100: undefined behaviour; 2.5 truncated);
//   K3 hardware.threads narrowed to int (data/hardware.cpp from_json). All are refused now.

// ---------------------------------------------------------------------------------------------
// Value preservation: every field the peer sent that the re-encoded message also carries must
// come back with the value the peer sent. Numbers compare as numbers (1 and 1.0 are the same
// value; an integer sent into a double field may round like any double), but never across a
// sign or a type: 18446744073709551615 read back as -1, or 2.5 read back as 2, means the reader
// silently changed what it was told instead of refusing it.
// (nlohmann's own operator== is no help: it says 18446744073709551615 == -1.)
inline bool same_number(const json& sent, const json& back) {
  if (sent.is_number_float() || back.is_number_float()) {
    if (!back.is_number_float() && sent.is_number_float()) return false;  // 2.5 became an integer
    return sent.get<double>() == back.get<double>();
  }
  // Both integers, of either signedness.
  if (sent.is_number_unsigned() && back.is_number_unsigned()) return sent.get<uint64_t>() == back.get<uint64_t>();
  const bool sent_neg = !sent.is_number_unsigned() && sent.get<int64_t>() < 0;
  const bool back_neg = !back.is_number_unsigned() && back.get<int64_t>() < 0;
  if (sent_neg != back_neg) return false;
  if (sent_neg) return sent.get<int64_t>() == back.get<int64_t>();
  return sent.get<uint64_t>() == back.get<uint64_t>();
}

inline void check_preserved(const json& sent, const json& back, const std::string& path, const std::string& what) {
  if (sent.is_null()) return;  // a null field is an absent field: the default goes back
  if (sent.is_number() && back.is_number()) {
    if (!same_number(sent, back))
      fail(what + ": field " + path + " was sent as " + sent.dump() + " and read back as " + back.dump());
    return;
  }
  if (sent.type() != back.type())
    fail(what + ": field " + path + " was sent as " + excerpt(sent) + " and read back as " + excerpt(back));
  if (sent.is_object()) {
    for (auto it = sent.begin(); it != sent.end(); ++it) {
      const auto b = back.find(it.key());
      if (b != back.end()) check_preserved(it.value(), *b, path + "." + it.key(), what);
    }
  } else if (sent.is_array()) {
    if (sent.size() != back.size())
      fail(what + ": array " + path + " of " + std::to_string(sent.size()) + " items read back with " +
           std::to_string(back.size()));
    for (std::size_t i = 0; i < sent.size(); ++i) check_preserved(sent[i], back[i], path + "[" + std::to_string(i) + "]", what);
  } else if (sent != back) {
    fail(what + ": field " + path + " was sent as " + excerpt(sent) + " and read back as " + excerpt(back));
  }
}

// What read_message<T> accepted re-encodes into a frame that the frame layer, parse_message and
// read_message<T> accept again, as the same type, and that re-encodes into the same bytes.
template <class T>
void check_round_trip(const T& first, net::MessageType type, const json& sent) {
  const std::string what = std::string("read_message<") + net::message_type_name(type) + ">";
  const json j1 = net::to_message(first);
  if (!j1.is_object() || j1.value("type", "") != net::message_type_name(type) || j1.value("v", 0) != net::kProtocolVersion)
    fail(what + ": to_message made " + excerpt(j1));

  std::string frame;
  try {
    frame = net::encode_frame(j1);
  } catch (const std::exception& e) {
    fail(what + ": encode_frame refused its own message (" + e.what() + "): " + excerpt(j1));
  }
  if (frame.size() <= net::kFrameHeaderBytes) fail(what + ": encode_frame made " + std::to_string(frame.size()) + " bytes");
  const std::string_view body = std::string_view(frame).substr(net::kFrameHeaderBytes);
  std::size_t n = 0;
  try {
    n = net::frame_body_length(reinterpret_cast<const uint8_t*>(frame.data()), net::kDefaultMaxFrameBytes);
  } catch (const net::ProtocolError& e) {
    fail(what + ": frame_body_length refused a frame encode_frame made: " + e.what());
  }
  if (n != body.size()) fail(what + ": the header says " + std::to_string(n) + " bytes, the body has " + std::to_string(body.size()));

  net::Message second;
  try {
    second = net::parse_message(body);
  } catch (const net::ProtocolError& e) {
    fail(what + " accepted a message whose re-encoding parse_message refuses (" + e.code() + ": " + e.what() +
         ")\n  sent:       " + excerpt(sent) + "\n  re-encoded: " + std::string(body.substr(0, 600)));
  }
  if (second.type != type)
    fail(what + ": the re-encoding parsed as a " + net::message_type_name(second.type) + ": " + std::string(body.substr(0, 600)));

  // Every field the peer sent (but the envelope) that the receiver of the re-encoding sees
  // again has the value the peer sent.
  const json second_body = net::to_message(second.payload);
  for (auto it = sent.begin(); it != sent.end(); ++it) {
    if (it.key() == "type" || it.key() == "v") continue;
    // make_error bounds an Error's message to 512 bytes (and "..."), by design.
    if (type == net::MessageType::Error && it.key() == "message" && it->is_string() && it->get_ref<const std::string&>().size() > 512)
      continue;
    const auto b = second_body.find(it.key());
    if (b != second_body.end()) check_preserved(it.value(), *b, it.key(), what);
  }

  const T* again = std::get_if<T>(&second.payload);
  if (!again) fail(what + ": parse_message decoded the re-encoding into another payload type");
  if (!(*again == first)) fail(what + ": the message read back differs from the one sent: " + excerpt(second_body));
  const std::string frame2 = net::encode_frame(net::to_message(*again));
  if (frame2 != frame)
    fail(what + ": the round trip is not a fixed point\n  first:  " + std::string(body.substr(0, 600)) +
         "\n  second: " + frame2.substr(net::kFrameHeaderBytes, 600));
}

// The whole contract of one frame body:
//  - parse_message accepts it or throws ProtocolError with a parse code (nothing else escapes);
//  - a JSON object is offered to read_message<T> for every T: each accepts it or throws
//    ProtocolError(bad_message), and parse_message accepts exactly when the envelope names T
//    and read_message<T> accepts;
//  - whatever a reader accepts survives the round trip (check_round_trip).
inline void check_body(std::string_view body) {
  const json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!j.is_discarded() && nesting(j) > kMaxNesting) {
    try {
      net::parse_message(body);
      fail("parse_message accepted a body nested " + std::to_string(nesting(j)) + " levels deep");
    } catch (const net::ProtocolError& e) {
      if (e.code() != net::codes::kBadJson) fail(std::string("a too deeply nested body was refused with '") + e.code() + "'");
    }
    return;
  }

  std::optional<net::Message> parsed;
  std::string refusal;
  try {
    parsed = net::parse_message(body);
  } catch (const net::ProtocolError& e) {
    if (!is_parse_code(e.code())) fail(std::string("parse_message refused with code '") + e.code() + "': " + e.what());
    refusal = e.code();
  }
  if (parsed) {
    if (j.is_discarded() || !j.is_object() || j.value("type", "") != net::message_type_name(parsed->type) ||
        j.value("v", 0) != net::kProtocolVersion || parsed->payload.index() != static_cast<std::size_t>(parsed->type))
      fail("parse_message accepted a body whose envelope does not name its type: " + std::string(body.substr(0, 600)));
  }

  if (j.is_discarded() || !j.is_object()) {
    if (parsed) fail("parse_message accepted a body that is not a JSON object");
    if (refusal != net::codes::kBadJson) fail("parse_message refused a non-object with '" + refusal + "', not bad_json");
    return;
  }

  // The envelope as parse_message should judge it.
  const auto v = j.find("v");
  const bool version_ok = v != j.end() && v->is_number_integer() && v->get<int64_t>() == net::kProtocolVersion;
  const auto t = j.find("type");
  const std::optional<net::MessageType> named =
      version_ok && t != j.end() && t->is_string() ? net::parse_message_type(t->get_ref<const std::string&>()) : std::nullopt;

  for_each_message_type([&]<class T>(net::MessageType type) {
    std::optional<T> got;
    try {
      got = net::read_message<T>(j);
    } catch (const net::ProtocolError& e) {
      if (e.code() != net::codes::kBadMessage)
        fail(std::string("read_message<") + net::message_type_name(type) + "> refused with code '" + e.code() + "'");
      if (parsed && parsed->type == type)
        fail(std::string("parse_message accepted a ") + net::message_type_name(type) + " that read_message refuses: " + e.what());
    }
    // An exception of any other type escapes to libFuzzer: a crash, as it should be.
    if (!got) return;
    if (named == type && !parsed)
      fail(std::string("read_message<") + net::message_type_name(type) + "> accepts a body parse_message refuses (" + refusal +
           "): " + excerpt(j));
    check_round_trip(*got, type, j);
  });
}

}  // namespace eesched::fuzz
