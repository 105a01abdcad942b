#pragma once
// Accepts TCP connections on an address and hands each socket (on its own strand) to a
// handler. Temporary accept failures (out of file descriptors) are logged and retried.
#include <cstdint>
#include <functional>

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>

#include "net/endpoint.h"

namespace eesched::net {

class Listener {
 public:
  using AcceptHandler = std::function<void(asio::ip::tcp::socket)>;
  // Binds and listens; throws std::runtime_error "cannot listen on HOST:PORT: reason".
  Listener(asio::io_context& io, const Endpoint& at, AcceptHandler on_accept);
  uint16_t port() const { return port_; }  // the bound port (useful with port 0)
  void close();

 private:
  void accept_next();
  asio::io_context& io_;
  asio::ip::tcp::acceptor acceptor_;
  asio::steady_timer retry_;
  AcceptHandler on_accept_;
  uint16_t port_ = 0;
};

}  // namespace eesched::net
