#include "ee/codec.h"

#include "ee/key.h"
#include "runtime/error.h"

namespace eesched::ee {

Codec::Codec(const Key& key) : forward_(key.permutation("vocab", key.vocab_size())), backward_(inverse(forward_)) {}

int64_t Codec::encrypt(int64_t id) const {
  if (id < 0 || id >= vocab_size())
    throw runtime::Error("token id " + std::to_string(id) + " outside the key's vocabulary of " + std::to_string(vocab_size()));
  return forward_[static_cast<std::size_t>(id)];
}

int64_t Codec::decrypt(int64_t id) const {
  if (id < 0 || id >= vocab_size())
    throw runtime::Error("encrypted id " + std::to_string(id) + " outside the key's vocabulary of " + std::to_string(vocab_size()));
  return backward_[static_cast<std::size_t>(id)];
}

std::vector<int64_t> Codec::encrypt(const std::vector<int64_t>& ids) const {
  std::vector<int64_t> out;
  out.reserve(ids.size());
  for (auto id : ids) out.push_back(encrypt(id));
  return out;
}

std::vector<int64_t> Codec::decrypt(const std::vector<int64_t>& ids) const {
  std::vector<int64_t> out;
  out.reserve(ids.size());
  for (auto id : ids) out.push_back(decrypt(id));
  return out;
}

}  // namespace eesched::ee
