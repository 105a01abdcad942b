#pragma once
// The client's secret: a 256-bit key from the OS CSPRNG, and every permutation and rotation
// angle derived from it. Derivation is a keyed PRF (BLAKE2b with the secret as key) over a
// label, expanded by ChaCha20 (libsodium's randombytes_buf_deterministic): the same secret and
// label give the same permutation on every machine, and nothing about one label's output says
// anything about another's.
#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace eesched::ee {

inline constexpr const char* kScheme = "eesched-ee";
inline constexpr int kSchemeVersion = 1;

class Key {
 public:
  static constexpr std::size_t kSecretBytes = 32;

  // A fresh key for a vocabulary of this size.
  static Key generate(int64_t vocab_size);
  // Reads and validates a key file; a malformed, truncated or wrong-version file is an Error.
  static Key load(const std::filesystem::path& path);
  // Writes the key file with mode 0600. Refuses to replace an existing file unless `force`.
  void save(const std::filesystem::path& path, bool force) const;

  int64_t vocab_size() const { return vocab_size_; }
  // Hex of a domain-separated BLAKE2b-128 hash of the secret: safe to show and to store.
  std::string fingerprint() const;

  // A uniformly random permutation of 0..n-1 for this label: p[i] is where i goes.
  std::vector<int64_t> permutation(const std::string& label, int64_t n) const;
  // n angles uniform in [0, 2 pi) for this label.
  std::vector<double> angles(const std::string& label, int64_t n) const;

  // Test hook: a key from given secret bytes.
  static Key from_secret(const std::array<uint8_t, kSecretBytes>& secret, int64_t vocab_size);

 private:
  Key() = default;
  std::array<uint8_t, kSecretBytes> secret_{};
  int64_t vocab_size_ = 0;
};

// The inverse permutation: inverse(p)[p[i]] = i.
std::vector<int64_t> inverse(const std::vector<int64_t>& p);

}  // namespace eesched::ee
