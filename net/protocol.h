#pragma once
// The wire protocol, without sockets: frames (a 4-byte big-endian length, then one JSON object
// with "type" and "v") and the error codes peers send each other. Pure functions, so the
// framing rules are tested byte by byte and shared by every peer.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace eesched::net {

inline constexpr int kProtocolVersion = 1;
inline constexpr std::size_t kFrameHeaderBytes = 4;
inline constexpr std::size_t kDefaultMaxFrameBytes = std::size_t{16} << 20;  // 16 MiB of JSON

// Every message type. "Hello/Register" is the handshake: the coordinator greets every peer with
// a nonce, a worker answers Register with an HMAC proof and gets Registered (with the
// coordinator's own proof). Accepted acknowledges a Submit once the task is persisted. Tokens
// carry a running task's new (encrypted) ids as they are produced, worker -> coordinator ->
// client, ahead of its Result. Error stays last (tests/fuzz/make_seeds walks the enum up to it).
enum class MessageType { Hello, Register, Registered, Heartbeat, Submit, Accepted, Assign, Tokens, Result, Cancel, Error, Status, StatusReply };

const char* message_type_name(MessageType t);
std::optional<MessageType> parse_message_type(std::string_view name);

// What went wrong, as the `code` of an Error frame. A ProtocolError closes the connection.
class ProtocolError : public std::runtime_error {
 public:
  ProtocolError(std::string code, const std::string& message) : std::runtime_error(message), code_(std::move(code)) {}
  const std::string& code() const { return code_; }

 private:
  std::string code_;
};

// Error codes (the `code` field of Error frames).
namespace codes {
inline constexpr const char* kTooLarge = "too_large";          // length over the limit, or zero
inline constexpr const char* kBadJson = "bad_json";            // not a JSON object
inline constexpr const char* kBadVersion = "bad_version";      // "v" missing or not ours
inline constexpr const char* kUnknownType = "unknown_type";    // "type" missing or not a message we know
inline constexpr const char* kBadMessage = "bad_message";      // a field missing or of the wrong type
inline constexpr const char* kUnexpected = "unexpected";       // a message this peer may not send now
inline constexpr const char* kAuthFailed = "auth_failed";      // wrong HMAC proof
inline constexpr const char* kTimeout = "timeout";             // a frame not finished, or silence, past the limit
inline constexpr const char* kShuttingDown = "shutting_down";  // the coordinator is draining
inline constexpr const char* kNoWorker = "no_worker";          // nothing can run this task
inline constexpr const char* kTaskFailed = "task_failed";      // every attempt failed
inline constexpr const char* kNotFound = "not_found";          // Cancel of an unknown task
inline constexpr const char* kOverloaded = "overloaded";        // too many unfinished tasks; try later
inline constexpr const char* kInternal = "internal";            // this side failed (e.g. its disk); not the peer's fault
}  // namespace codes

// {"type": NAME, "v": kProtocolVersion}
nlohmann::json make_message(MessageType type);
// An Error frame; task_id when it concerns one task (the connection then stays open).
nlohmann::json make_error(const std::string& code, const std::string& message, std::optional<int64_t> task_id = std::nullopt);

// The bytes of one frame. Throws ProtocolError(too_large) when the JSON exceeds max_frame_bytes.
std::string encode_frame(const nlohmann::json& message, std::size_t max_frame_bytes = kDefaultMaxFrameBytes);

// The body length a header announces; throws ProtocolError(too_large) for 0 or over the limit.
std::size_t frame_body_length(const uint8_t* header, std::size_t max_frame_bytes);

// A frame body's envelope: a JSON object, our version, a known type. Its fields are decoded once,
// by net/messages.h's parse_message, which calls this first.
struct Envelope {
  MessageType type;
  nlohmann::json body;  // the whole object, "type" and "v" included
};

// Throws ProtocolError with the matching code (bad_json, bad_version, unknown_type).
Envelope parse_envelope(std::string_view body);

}  // namespace eesched::net
