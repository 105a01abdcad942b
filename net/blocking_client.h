#pragma once
// A synchronous framed connection with timeouts, for the submit command, benchmarks and tests:
// connect, send messages (or raw bytes), wait for the next message.
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "net/endpoint.h"
#include "net/messages.h"

namespace eesched::net {

class BlockingClient {
 public:
  // Throws std::runtime_error "cannot connect to HOST:PORT: reason".
  static BlockingClient connect(const Endpoint& at, std::chrono::milliseconds timeout,
                                std::size_t max_frame_bytes = kDefaultMaxFrameBytes);
  BlockingClient(BlockingClient&&) noexcept;
  BlockingClient& operator=(BlockingClient&&) noexcept;
  ~BlockingClient();

  void send(const nlohmann::json& message);  // throws std::runtime_error when the peer is gone
  void send_raw(std::string_view bytes);     // anything at all (tests of the frame checks)
  // The next message; nullopt on timeout. Throws std::runtime_error when the peer closed the
  // connection, and ProtocolError when it sent something malformed.
  std::optional<Message> receive(std::chrono::milliseconds timeout);
  void close();

 private:
  struct Impl;
  explicit BlockingClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace eesched::net
