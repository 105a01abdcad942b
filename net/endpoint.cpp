#include "net/endpoint.h"

#include <charconv>
#include <stdexcept>

namespace eesched::net {

Endpoint parse_endpoint(const std::string& text) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size())
    throw std::runtime_error("bad address '" + text + "': expected HOST:PORT, e.g. 127.0.0.1:7700");
  Endpoint e;
  e.host = text.substr(0, colon);
  if (e.host.size() >= 2 && e.host.front() == '[' && e.host.back() == ']') e.host = e.host.substr(1, e.host.size() - 2);
  if (e.host.empty()) throw std::runtime_error("bad address '" + text + "': empty host");
  unsigned port = 0;
  const char* first = text.data() + colon + 1;
  const char* last = text.data() + text.size();
  const auto [end, ec] = std::from_chars(first, last, port);
  if (ec != std::errc() || end != last || port > 65535)
    throw std::runtime_error("bad address '" + text + "': the port must be a number from 0 to 65535");
  e.port = static_cast<uint16_t>(port);
  return e;
}

}  // namespace eesched::net
