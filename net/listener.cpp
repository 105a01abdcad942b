#include "net/listener.h"

#include <asio/strand.hpp>
#include <stdexcept>

#include <spdlog/spdlog.h>

namespace eesched::net {

Listener::Listener(asio::io_context& io, const Endpoint& at, AcceptHandler on_accept)
    : io_(io), acceptor_(io), retry_(io), on_accept_(std::move(on_accept)) {
  try {
    asio::ip::tcp::resolver resolver(io);
    const auto results = resolver.resolve(at.host, std::to_string(at.port), asio::ip::tcp::resolver::passive);
    const asio::ip::tcp::endpoint ep = *results.begin();
    acceptor_.open(ep.protocol());
    acceptor_.set_option(asio::ip::tcp::acceptor::reuse_address(true));
    acceptor_.bind(ep);
    acceptor_.listen(asio::socket_base::max_listen_connections);
    port_ = acceptor_.local_endpoint().port();
  } catch (const std::system_error& e) {
    throw std::runtime_error("cannot listen on " + at.str() + ": " + e.code().message());
  }
  accept_next();
}

void Listener::accept_next() {
  acceptor_.async_accept(asio::make_strand(io_), [this](std::error_code ec, asio::ip::tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (ec) {
      // EMFILE and friends: wait a little rather than spin; the daemon keeps serving.
      spdlog::warn("accept failed: {}; retrying in 100 ms", ec.message());
      retry_.expires_after(std::chrono::milliseconds(100));
      retry_.async_wait([this](std::error_code e) {
        if (!e) accept_next();
      });
      return;
    }
    on_accept_(std::move(socket));
    accept_next();
  });
}

void Listener::close() {
  asio::error_code ec;
  acceptor_.close(ec);
  retry_.cancel();
}

}  // namespace eesched::net
