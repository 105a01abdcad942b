#pragma once
// Worker authentication: coordinator and workers share a token file; each side proves it holds
// the token by an HMAC-SHA256 over the other side's fresh nonce, so the token never crosses
// the wire and a recorded proof cannot be replayed on another connection.
#include <filesystem>
#include <string>
#include <string_view>

namespace eesched::net {

// Labels keep a worker's proof from being reflected back as the coordinator's.
inline constexpr const char* kWorkerProofLabel = "eesched/worker/v1";
inline constexpr const char* kCoordinatorProofLabel = "eesched/coordinator/v1";

class Token {
 public:
  // Reads a token file (its whole content, surrounding whitespace trimmed). Throws
  // std::runtime_error for a missing, unreadable, empty or too short (< 16 bytes) token.
  static Token read_file(const std::filesystem::path& path);
  // Writes a fresh 256-bit token, hex, mode 0600. Refuses to overwrite an existing file.
  static void write_new(const std::filesystem::path& path);
  static Token from_secret(std::string secret);  // tests; the same length rule

  // hex HMAC-SHA256(token, label \0 nonce \0 name)
  std::string proof(std::string_view label, std::string_view nonce, std::string_view name) const;
  // Constant-time comparison with the expected proof.
  bool verify(std::string_view label, std::string_view nonce, std::string_view name, std::string_view proof) const;

 private:
  explicit Token(std::string secret) : secret_(std::move(secret)) {}
  std::string secret_;
};

// A fresh random challenge (32 bytes from the OS CSPRNG, hex).
std::string make_nonce();

}  // namespace eesched::net
