#include "net/connection.h"

#include <asio/bind_executor.hpp>
#include <asio/post.hpp>
#include <asio/write.hpp>
#include <algorithm>
#include <cstdint>
#include <cstring>

namespace eesched::net {
namespace {

std::atomic<uint64_t> next_connection_id{1};
constexpr std::size_t kReadChunk = 64 * 1024;

std::string describe_peer(const asio::ip::tcp::socket& s) {
  asio::error_code ec;
  const auto ep = s.remote_endpoint(ec);
  if (ec) return "?";
  return ep.address().to_string() + ":" + std::to_string(ep.port());
}

}  // namespace

std::shared_ptr<Connection> Connection::create(asio::ip::tcp::socket socket, const Options& options) {
  return std::shared_ptr<Connection>(new Connection(std::move(socket), options));
}

Connection::Connection(asio::ip::tcp::socket socket, const Options& options)
    : socket_(std::move(socket)),
      deadline_(socket_.get_executor()),
      options_(options),
      id_(next_connection_id++),
      peer_(describe_peer(socket_)) {
  asio::error_code ec;
  socket_.set_option(asio::ip::tcp::no_delay(true), ec);  // small request/response frames
}

Connection::~Connection() = default;

void Connection::start(MessageHandler on_message, CloseHandler on_close) {
  asio::post(socket_.get_executor(), [self = shared_from_this(), m = std::move(on_message), c = std::move(on_close)]() mutable {
    self->on_message_ = std::move(m);
    self->on_close_ = std::move(c);
    self->arm_deadline();
    self->watch_deadline();
    self->read_more();
  });
}

bool Connection::send(const nlohmann::json& message) {
  if (closing_.load()) return false;
  push_frame(encode_frame(message, options_.max_frame_bytes));
  return true;
}

void Connection::push_frame(std::string frame) {
  asio::post(socket_.get_executor(), [self = shared_from_this(), f = std::move(frame)]() mutable {
    if (self->closed_ || self->close_after_flush_) return;
    self->queued_bytes_ += f.size();
    if (self->queued_bytes_ > self->options_.max_queued_bytes) return self->close_on_strand("the peer does not read what we send");
    self->queued_.push_back(std::move(f));
    if (!self->write_in_flight_) self->write_batch();
  });
}

void Connection::write_batch() {
  writing_.swap(queued_);
  queued_.clear();
  std::vector<asio::const_buffer> buffers;
  buffers.reserve(writing_.size());
  for (const auto& f : writing_) buffers.emplace_back(f.data(), f.size());
  write_in_flight_ = true;
  asio::async_write(socket_, buffers, asio::bind_executor(socket_.get_executor(), [self = shared_from_this()](std::error_code ec, std::size_t) {
                      self->write_in_flight_ = false;
                      for (const auto& f : self->writing_) self->queued_bytes_ -= f.size();
                      self->writing_.clear();
                      if (ec) return self->close_on_strand("write failed: " + ec.message());
                      if (!self->queued_.empty()) return self->write_batch();
                      if (self->close_after_flush_) self->close_on_strand(self->close_reason_);
                    }));
}

void Connection::read_more() {
  if (closed_ || stop_reading_) return;
  // Grow with what arrives (doubling), never with what a header merely announces: a peer must
  // send 16 MiB to make us hold 16 MiB.
  if (inbuf_.size() < in_used_ + kReadChunk) inbuf_.resize(std::max(in_used_ + kReadChunk, 2 * inbuf_.size()));
  socket_.async_read_some(asio::buffer(inbuf_.data() + in_used_, kReadChunk),
                          asio::bind_executor(socket_.get_executor(), [self = shared_from_this()](std::error_code ec, std::size_t n) {
                            if (ec) {
                              const bool eof = ec == asio::error::eof || ec == asio::error::connection_reset;
                              if (self->in_used_ > 0 && eof && !self->stop_reading_)
                                return self->close_on_strand("truncated frame: the peer closed mid-frame");
                              return self->close_on_strand(eof ? "closed by peer" : "read failed: " + ec.message());
                            }
                            self->on_read(n);
                          }));
}

void Connection::on_read(std::size_t n) {
  const bool frame_was_started = in_used_ > 0;
  in_used_ += n;
  const std::size_t before = in_used_;
  consume_frames();
  if (closed_ || stop_reading_) return;
  // Only a completed frame or a new one restarts the deadline: bytes trickling into a started
  // frame must not postpone it (a slow-loris peer would hold the connection forever).
  if (!frame_was_started || in_used_ < before) arm_deadline();
  read_more();
}

void Connection::consume_frames() {
  std::size_t pos = 0;
  while (!closed_ && !stop_reading_ && in_used_ - pos >= kFrameHeaderBytes) {
    std::size_t len = 0;
    try {
      len = frame_body_length(inbuf_.data() + pos, options_.max_frame_bytes);
    } catch (const ProtocolError& e) {
      return fail_on_strand(e.code(), e.what());
    }
    if (in_used_ - pos - kFrameHeaderBytes < len) break;  // the rest of it is still on its way
    const std::string_view body(reinterpret_cast<const char*>(inbuf_.data() + pos + kFrameHeaderBytes), len);
    pos += kFrameHeaderBytes + len;
    Message message;
    try {
      message = parse_message(body);
    } catch (const ProtocolError& e) {
      return fail_on_strand(e.code(), e.what());
    }
    if (on_message_) on_message_(shared_from_this(), std::move(message));
  }
  if (pos > 0) {
    std::memmove(inbuf_.data(), inbuf_.data() + pos, in_used_ - pos);
    in_used_ -= pos;
  }
  if (in_used_ == 0 && inbuf_.size() > 4 * kReadChunk) inbuf_.resize(kReadChunk);  // give a big frame's memory back
}

void Connection::arm_deadline() {
  using clock = asio::steady_timer::clock_type;
  if (in_used_ > 0 || close_after_flush_) {
    deadline_.expires_after(options_.frame_timeout);
  } else if (options_.idle_timeout.count() > 0) {
    deadline_.expires_after(options_.idle_timeout);
  } else {
    deadline_.expires_at(clock::time_point::max());
  }
}

void Connection::watch_deadline() {
  deadline_.async_wait(asio::bind_executor(socket_.get_executor(), [self = shared_from_this()](std::error_code) {
    if (self->closed_) return;
    if (self->deadline_.expiry() <= asio::steady_timer::clock_type::now()) {
      if (self->close_after_flush_) return self->close_on_strand(self->close_reason_ + " (peer did not read the error)");
      const bool mid_frame = self->in_used_ > 0;
      self->fail_on_strand(codes::kTimeout, mid_frame ? "frame not completed within " +
                                                            std::to_string(self->options_.frame_timeout.count()) + " ms"
                                                      : "idle for " + std::to_string(self->options_.idle_timeout.count()) + " ms");
      return self->watch_deadline();
    }
    self->watch_deadline();
  }));
}

void Connection::set_idle_timeout(std::chrono::milliseconds timeout) {
  asio::post(socket_.get_executor(), [self = shared_from_this(), timeout] {
    self->options_.idle_timeout = timeout;
    if (!self->closed_) self->arm_deadline();
  });
}

void Connection::set_max_queued_bytes(std::size_t bytes) {
  asio::post(socket_.get_executor(), [self = shared_from_this(), bytes] { self->options_.max_queued_bytes = bytes; });
}

void Connection::fail(const std::string& code, const std::string& message) {
  asio::post(socket_.get_executor(), [self = shared_from_this(), code, message] { self->fail_on_strand(code, message); });
}

void Connection::fail_on_strand(const std::string& code, const std::string& message) {
  if (closed_ || close_after_flush_) return;
  stop_reading_ = true;
  closing_ = true;
  std::string error = encode_frame(make_error(code, message), SIZE_MAX);  // bounded by make_error
  queued_bytes_ += error.size();
  queued_.push_back(std::move(error));
  close_after_flush_ = true;
  close_reason_ = code + ": " + message;
  arm_deadline();  // a peer that never reads its error is dropped after frame_timeout
  if (!write_in_flight_) write_batch();
}

void Connection::close(const std::string& reason) {
  closing_ = true;
  asio::post(socket_.get_executor(), [self = shared_from_this(), reason] { self->close_on_strand(reason); });
}

void Connection::close_on_strand(const std::string& reason) {
  if (closed_) return;
  closed_ = true;
  closing_ = true;
  asio::error_code ec;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  socket_.close(ec);
  deadline_.cancel();
  auto on_close = std::move(on_close_);
  on_message_ = nullptr;  // handlers may hold pointers back to their owner: break the cycle
  on_close_ = nullptr;
  if (on_close) on_close(shared_from_this(), reason);
}

}  // namespace eesched::net
