#pragma once
// One framed, bidirectional TCP conversation over Asio, used by every daemon: reads frames and
// hands each validated message to a handler; queues outgoing frames (writes are batched);
// enforces the frame size limit, a deadline for finishing a started frame, and an optional idle
// timeout. A protocol violation sends an Error frame and closes this connection only.
//
// All socket work runs on the socket's strand; send(), fail() and close() may be called from
// any thread.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>
#include <nlohmann/json.hpp>

#include "net/messages.h"

namespace eesched::net {

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  struct Options {
    std::size_t max_frame_bytes = kDefaultMaxFrameBytes;
    std::chrono::milliseconds frame_timeout{10000};  // a frame whose first byte arrived must be complete by then
    std::chrono::milliseconds idle_timeout{0};       // no frame at all for this long: closed (0: never)
    std::size_t max_queued_bytes = std::size_t{64} << 20;  // unsent bytes a peer may leave unread before it is dropped
  };
  using MessageHandler = std::function<void(const std::shared_ptr<Connection>&, Message)>;
  using CloseHandler = std::function<void(const std::shared_ptr<Connection>&, const std::string& reason)>;

  // The socket's executor should be a strand (Listener and connect() make it so).
  static std::shared_ptr<Connection> create(asio::ip::tcp::socket socket, const Options& options);
  ~Connection();

  // Starts reading. on_message runs on the strand, one message at a time; on_close runs once.
  void start(MessageHandler on_message, CloseHandler on_close);

  // Queues one message. False (and nothing sent) when the connection is closed or closing; a
  // message over the frame limit is not sent and throws ProtocolError(too_large).
  bool send(const nlohmann::json& message);
  // Sends an Error frame, stops reading, and closes once it is written.
  void fail(const std::string& code, const std::string& message);
  void close(const std::string& reason);
  void set_idle_timeout(std::chrono::milliseconds timeout);
  void set_max_queued_bytes(std::size_t bytes);

  uint64_t id() const { return id_; }
  const std::string& peer() const { return peer_; }
  bool closed() const { return closing_.load(); }

 private:
  Connection(asio::ip::tcp::socket socket, const Options& options);
  void read_more();
  void on_read(std::size_t n);
  void consume_frames();
  void push_frame(std::string frame);
  void write_batch();
  void arm_deadline();
  void watch_deadline();
  void fail_on_strand(const std::string& code, const std::string& message);
  void close_on_strand(const std::string& reason);

  asio::ip::tcp::socket socket_;
  asio::steady_timer deadline_;
  Options options_;
  uint64_t id_;
  std::string peer_;
  MessageHandler on_message_;
  CloseHandler on_close_;

  std::vector<uint8_t> inbuf_;    // received, not yet consumed
  std::size_t in_used_ = 0;
  std::vector<std::string> queued_, writing_;  // frames waiting; frames being written
  std::size_t queued_bytes_ = 0;    // queued_ + writing_
  bool write_in_flight_ = false;
  bool stop_reading_ = false;       // after fail(): ignore further input
  bool close_after_flush_ = false;
  std::string close_reason_;
  std::atomic<bool> closing_{false};  // no more sends accepted
  bool closed_ = false;               // socket closed (strand only)
};

}  // namespace eesched::net
