#pragma once
// The client's side of EE: token ids in and out of the encrypted vocabulary. The worker gets
// only encrypted ids (prompt and stop ids) and returns encrypted ids.
#include <cstdint>
#include <vector>

namespace eesched::ee {

class Key;

class Codec {
 public:
  explicit Codec(const Key& key);

  int64_t vocab_size() const { return static_cast<int64_t>(forward_.size()); }
  int64_t encrypt(int64_t id) const;
  int64_t decrypt(int64_t id) const;
  std::vector<int64_t> encrypt(const std::vector<int64_t>& ids) const;
  std::vector<int64_t> decrypt(const std::vector<int64_t>& ids) const;

 private:
  std::vector<int64_t> forward_, backward_;
};

}  // namespace eesched::ee
