#pragma once
// One exception type for the runtime: its what() is a single line meant for the user.
#include <stdexcept>
#include <string>

namespace eesched::runtime {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace eesched::runtime
