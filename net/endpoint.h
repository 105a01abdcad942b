#pragma once
// HOST:PORT, as every daemon flag spells an address.
#include <cstdint>
#include <string>

namespace eesched::net {

struct Endpoint {
  std::string host;
  uint16_t port = 0;
  std::string str() const { return host + ":" + std::to_string(port); }
};

// "127.0.0.1:7700", "localhost:0" (0: any free port, for listening). Throws std::runtime_error
// with a one-line reason otherwise.
Endpoint parse_endpoint(const std::string& text);

}  // namespace eesched::net
