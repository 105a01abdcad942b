#include "net/blocking_client.h"

#include <asio/connect.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/read.hpp>
#include <asio/write.hpp>
#include <algorithm>
#include <chrono>
#include <stdexcept>

namespace eesched::net {

struct BlockingClient::Impl {
  asio::io_context io;
  asio::ip::tcp::socket socket{io};
  std::size_t max_frame_bytes = kDefaultMaxFrameBytes;
  std::string peer;
  // inbuf[0, used): received and not yet returned (the rest is room to read into). A receive()
  // that times out mid-header keeps what came, so a caller that polls with short timeouts never
  // loses its place in the stream.
  std::string inbuf;
  std::size_t used = 0;

  // Runs the io_context until `done` or the timeout; cancels what is still pending on timeout.
  bool run_until(const bool& done, std::chrono::milliseconds timeout) {
    io.restart();
    io.run_for(timeout);
    if (done) return true;
    asio::error_code ec;
    socket.cancel(ec);
    io.restart();
    io.run();  // let the cancelled handlers finish
    return done;
  }

  // Reads until `used` is at least `want`: no error when it is, timed_out when the timeout passes
  // first (what arrived is kept), or the socket's error.
  std::error_code fill(std::size_t want, std::chrono::milliseconds timeout) {
    using Clock = std::chrono::steady_clock;
    const auto deadline = Clock::now() + timeout;
    while (used < want) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return asio::error::timed_out;
      // Room for more than asked: the frames behind it come along in the same read.
      if (inbuf.size() < std::max(want, used + 4096)) inbuf.resize(std::max(want, used + 65536));
      std::error_code error;
      std::size_t got = 0;
      bool done = false;
      socket.async_read_some(asio::buffer(inbuf.data() + used, inbuf.size() - used), [&](std::error_code ec, std::size_t n) {
        error = ec;
        got = n;
        done = true;
      });
      const bool finished = run_until(done, left);
      used += got;
      if (!finished || error == asio::error::operation_aborted) return asio::error::timed_out;
      if (error) return error;
    }
    return {};
  }

  // The first `n` bytes, taken out.
  std::string take(std::size_t n) {
    std::string out = inbuf.substr(0, n);
    inbuf.erase(0, n);
    used -= n;
    return out;
  }
};

BlockingClient::BlockingClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BlockingClient::BlockingClient(BlockingClient&&) noexcept = default;
BlockingClient& BlockingClient::operator=(BlockingClient&&) noexcept = default;
BlockingClient::~BlockingClient() = default;

BlockingClient BlockingClient::connect(const Endpoint& at, std::chrono::milliseconds timeout, std::size_t max_frame_bytes) {
  auto impl = std::make_unique<Impl>();
  impl->max_frame_bytes = max_frame_bytes;
  impl->peer = at.str();
  std::error_code result = asio::error::timed_out;
  bool done = false;
  asio::ip::tcp::resolver resolver(impl->io);
  std::error_code rec;
  const auto endpoints = resolver.resolve(at.host, std::to_string(at.port), rec);
  if (rec) throw std::runtime_error("cannot connect to " + at.str() + ": " + rec.message());
  asio::async_connect(impl->socket, endpoints, [&](std::error_code ec, const asio::ip::tcp::endpoint&) {
    result = ec;
    done = true;
  });
  impl->run_until(done, timeout);
  if (!done) result = asio::error::timed_out;
  if (result) throw std::runtime_error("cannot connect to " + at.str() + ": " + result.message());
  asio::error_code ec;
  impl->socket.set_option(asio::ip::tcp::no_delay(true), ec);
  return BlockingClient(std::move(impl));
}

void BlockingClient::send(const nlohmann::json& message) { send_raw(encode_frame(message, impl_->max_frame_bytes)); }

void BlockingClient::send_raw(std::string_view bytes) {
  asio::error_code ec;
  asio::write(impl_->socket, asio::buffer(bytes.data(), bytes.size()), ec);
  if (ec) throw std::runtime_error("cannot send to " + impl_->peer + ": " + ec.message());
}

std::optional<Message> BlockingClient::receive(std::chrono::milliseconds timeout) {
  auto& in = *impl_;
  const auto error = in.fill(kFrameHeaderBytes, timeout);
  if (error == asio::error::timed_out) return std::nullopt;
  if (error) {
    const bool eof = error == asio::error::eof || error == asio::error::connection_reset;
    throw std::runtime_error(eof ? "connection closed by " + in.peer : "cannot read from " + in.peer + ": " + error.message());
  }
  const std::size_t n = frame_body_length(reinterpret_cast<const uint8_t*>(in.inbuf.data()), in.max_frame_bytes);
  // The body follows its header at once; a peer that stalls mid-frame is an error, not a timeout.
  if (in.fill(kFrameHeaderBytes + n, std::max(timeout, std::chrono::milliseconds(10000))))
    throw std::runtime_error("truncated frame from " + in.peer);
  const std::string body = in.take(kFrameHeaderBytes + n).substr(kFrameHeaderBytes);
  return parse_message(body);
}

void BlockingClient::close() {
  asio::error_code ec;
  impl_->socket.shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  impl_->socket.close(ec);
}

}  // namespace eesched::net
