// libFuzzer target: a byte stream as a peer would send it, cut into frames the way a connection
// does: a 4-byte big-endian length read by frame_body_length, then that many bytes of body for
// parse_message. A last frame that is cut short is parsed as far as it goes (a truncated body is
// as good an input for the parser as any). Seeds: make_seeds writes single frames and a stream
// of one frame of every type.
//
// Properties: frame_body_length returns exactly the big-endian length when it is in
// [1, limit] and throws ProtocolError(too_large) otherwise (checked at the default limit and at a
// small one); parse_message accepts or throws ProtocolError with a parse code, and what it
// accepts carries its own type and version. Anything else escaping is a crash.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "tests/fuzz/oracle.h"

namespace {

namespace net = eesched::net;
using eesched::fuzz::fail;

// frame_body_length against the rule it implements.
std::size_t checked_length(const uint8_t* header, std::size_t limit, bool& refused) {
  const uint32_t n = (uint32_t{header[0]} << 24) | (uint32_t{header[1]} << 16) | (uint32_t{header[2]} << 8) | uint32_t{header[3]};
  refused = false;
  try {
    const std::size_t got = net::frame_body_length(header, limit);
    if (n == 0 || n > limit) fail("frame_body_length accepted " + std::to_string(n) + " under a limit of " + std::to_string(limit));
    if (got != n) fail("frame_body_length read " + std::to_string(got) + " from a header of " + std::to_string(n));
    return got;
  } catch (const net::ProtocolError& e) {
    if (e.code() != net::codes::kTooLarge) fail(std::string("frame_body_length refused with '") + e.code() + "'");
    if (n != 0 && n <= limit) fail("frame_body_length refused " + std::to_string(n) + " under a limit of " + std::to_string(limit));
    refused = true;
    return 0;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  constexpr std::size_t kSmallLimit = 256;
  std::size_t off = 0;
  while (size - off >= net::kFrameHeaderBytes) {
    bool refused_small = false, refused = false;
    checked_length(data + off, kSmallLimit, refused_small);
    const std::size_t n = checked_length(data + off, net::kDefaultMaxFrameBytes, refused);
    if (refused) return 0;  // the connection would send Error(too_large) and close
    off += net::kFrameHeaderBytes;
    const std::size_t take = n < size - off ? n : size - off;
    const std::string_view body(reinterpret_cast<const char*>(data + off), take);
    off += take;
    try {
      const net::Message m = net::parse_message(body);
      const auto j = nlohmann::json::parse(body);  // it parsed, so it is JSON
      if (!j.is_object() || j.value("type", "") != net::message_type_name(m.type) || j.value("v", 0) != net::kProtocolVersion ||
          m.payload.index() != static_cast<std::size_t>(m.type))
        fail("parse_message accepted a body whose envelope does not name its type: " + eesched::fuzz::excerpt(j));
    } catch (const net::ProtocolError& e) {
      if (!eesched::fuzz::is_parse_code(e.code())) fail(std::string("parse_message refused with code '") + e.code() + "'");
      return 0;  // the connection closes after the first bad frame
    }
  }
  return 0;
}
