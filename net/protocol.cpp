#include "net/protocol.h"

#include <array>

#include "net/messages.h"

namespace eesched::net {
namespace {

constexpr std::array<std::pair<MessageType, const char*>, 13> kTypeNames{{
    {MessageType::Hello, "Hello"},
    {MessageType::Register, "Register"},
    {MessageType::Registered, "Registered"},
    {MessageType::Heartbeat, "Heartbeat"},
    {MessageType::Submit, "Submit"},
    {MessageType::Accepted, "Accepted"},
    {MessageType::Assign, "Assign"},
    {MessageType::Tokens, "Tokens"},
    {MessageType::Result, "Result"},
    {MessageType::Cancel, "Cancel"},
    {MessageType::Error, "Error"},
    {MessageType::Status, "Status"},
    {MessageType::StatusReply, "StatusReply"},
}};

}  // namespace

const char* message_type_name(MessageType t) {
  for (const auto& [type, name] : kTypeNames)
    if (type == t) return name;
  return "?";
}

std::optional<MessageType> parse_message_type(std::string_view name) {
  for (const auto& [type, n] : kTypeNames)
    if (name == n) return type;
  return std::nullopt;
}

nlohmann::json make_message(MessageType type) { return {{"type", message_type_name(type)}, {"v", kProtocolVersion}}; }

nlohmann::json make_error(const std::string& code, const std::string& message, std::optional<int64_t> task_id) {
  auto j = make_message(MessageType::Error);
  j["code"] = code;
  // Messages may quote what a peer sent: bounded, so an error always fits in a frame.
  constexpr std::size_t kMaxMessage = 512;
  j["message"] = message.size() <= kMaxMessage ? message : message.substr(0, kMaxMessage) + "...";
  if (task_id) j["task_id"] = *task_id;
  return j;
}

std::string encode_frame(const nlohmann::json& message, std::size_t max_frame_bytes) {
  // Invalid UTF-8 in a string is replaced rather than thrown: a frame is always valid JSON.
  const std::string body = message.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (body.size() > max_frame_bytes || body.size() > UINT32_MAX)
    throw ProtocolError(codes::kTooLarge, "message of " + std::to_string(body.size()) + " bytes exceeds the frame limit of " +
                                              std::to_string(max_frame_bytes));
  const auto n = static_cast<uint32_t>(body.size());
  std::string frame;
  frame.reserve(kFrameHeaderBytes + body.size());
  frame.push_back(static_cast<char>(n >> 24));
  frame.push_back(static_cast<char>(n >> 16));
  frame.push_back(static_cast<char>(n >> 8));
  frame.push_back(static_cast<char>(n));
  frame += body;
  return frame;
}

std::size_t frame_body_length(const uint8_t* header, std::size_t max_frame_bytes) {
  const uint32_t n = (uint32_t{header[0]} << 24) | (uint32_t{header[1]} << 16) | (uint32_t{header[2]} << 8) | uint32_t{header[3]};
  if (n == 0) throw ProtocolError(codes::kTooLarge, "empty frame");
  if (n > max_frame_bytes)
    throw ProtocolError(codes::kTooLarge,
                        "frame of " + std::to_string(n) + " bytes exceeds the limit of " + std::to_string(max_frame_bytes));
  return n;
}

namespace {

// Every message nests a few levels deep; a frame of 16 MiB of "[[[[..." made the DOM parser
// spend 620 MB and 4 s (found by fuzzing), before any authentication. Scan the depth first.
constexpr int kMaxNesting = 32;

bool nests_too_deep(std::string_view body) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (const char c : body) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxNesting) return true;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return false;
}

}  // namespace

Envelope parse_envelope(std::string_view body) {
  if (nests_too_deep(body)) throw ProtocolError(codes::kBadJson, "frame nests deeper than " + std::to_string(kMaxNesting) + " levels");
  nlohmann::json j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw ProtocolError(codes::kBadJson, "frame is not valid JSON");
  if (!j.is_object()) throw ProtocolError(codes::kBadJson, "frame is not a JSON object");
  const auto v = j.find("v");
  if (v == j.end() || !v->is_number_integer())
    throw ProtocolError(codes::kBadVersion, "frame has no protocol version \"v\"");
  if (v->get<int64_t>() != kProtocolVersion)
    throw ProtocolError(codes::kBadVersion, "protocol version " + v->dump() + " is not supported (this eesched speaks " +
                                                std::to_string(kProtocolVersion) + ")");
  const auto t = j.find("type");
  if (t == j.end() || !t->is_string()) throw ProtocolError(codes::kUnknownType, "frame has no \"type\"");
  const auto type = parse_message_type(t->get_ref<const std::string&>());
  if (!type) throw ProtocolError(codes::kUnknownType, "unknown message type \"" + t->get<std::string>() + "\"");
  return {*type, std::move(j)};
}

}  // namespace eesched::net
