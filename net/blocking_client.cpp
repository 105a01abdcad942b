#include "net/blocking_client.h"

#include <asio/connect.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/read.hpp>
#include <asio/write.hpp>
#include <stdexcept>

namespace eesched::net {

struct BlockingClient::Impl {
  asio::io_context io;
  asio::ip::tcp::socket socket{io};
  std::size_t max_frame_bytes = kDefaultMaxFrameBytes;
  std::string peer;

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
  uint8_t header[kFrameHeaderBytes];
  bool done = false;
  std::error_code error;
  asio::async_read(impl_->socket, asio::buffer(header), [&](std::error_code ec, std::size_t) {
    error = ec;
    done = true;
  });
  if (!impl_->run_until(done, timeout) || error == asio::error::operation_aborted) return std::nullopt;
  if (error) {
    const bool eof = error == asio::error::eof || error == asio::error::connection_reset;
    throw std::runtime_error(eof ? "connection closed by " + impl_->peer : "cannot read from " + impl_->peer + ": " + error.message());
  }
  std::string body(frame_body_length(header, impl_->max_frame_bytes), '\0');
  // The body follows its header at once; a peer that stalls mid-frame is an error, not a timeout.
  done = false;
  asio::async_read(impl_->socket, asio::buffer(body), [&](std::error_code ec, std::size_t) {
    error = ec;
    done = true;
  });
  if (!impl_->run_until(done, std::max(timeout, std::chrono::milliseconds(10000))) || error)
    throw std::runtime_error("truncated frame from " + impl_->peer);
  return parse_message(body);
}

void BlockingClient::close() {
  asio::error_code ec;
  impl_->socket.shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  impl_->socket.close(ec);
}

}  // namespace eesched::net
