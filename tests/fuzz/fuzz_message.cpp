// libFuzzer target: one frame body (the bytes after the 4-byte length) through parse_message and
// every typed reader, and what a reader accepts through a full round trip. The properties are
// in oracle.h (check_body). Seeds: make_seeds writes one body per message variant.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "tests/fuzz/oracle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  eesched::fuzz::check_body(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
