#pragma once
// error_of<E>(fn): runs fn, expects an E and returns its message; any other outcome fails the
// test. Light (no LibTorch), for every suite.
#include <gtest/gtest.h>

#include <exception>
#include <functional>
#include <string>

namespace eesched::testing {

template <typename E>
std::string error_of_type(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected another exception type, got: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected an exception, got none";
  return "";
}

}  // namespace eesched::testing
