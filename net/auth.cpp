#include "net/auth.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace eesched::net {
namespace {

void init_sodium() {
  if (sodium_init() < 0) throw std::runtime_error("libsodium failed to initialise");
}

std::string to_hex(const unsigned char* data, std::size_t n) {
  std::string hex(2 * n + 1, '\0');
  sodium_bin2hex(hex.data(), hex.size(), data, n);
  hex.pop_back();
  return hex;
}

constexpr std::size_t kMinTokenBytes = 16;

}  // namespace

Token Token::read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read token file " + path.string() + ": " + std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  const auto first = s.find_first_not_of(" \t\r\n");
  const auto last = s.find_last_not_of(" \t\r\n");
  s = first == std::string::npos ? std::string() : s.substr(first, last - first + 1);
  if (s.size() < kMinTokenBytes)
    throw std::runtime_error("token file " + path.string() + " holds " + std::to_string(s.size()) +
                             " bytes; at least 16 are needed (make one with: eesched make-token --out FILE)");
  return Token(std::move(s));
}

void Token::write_new(const std::filesystem::path& path) {
  init_sodium();
  std::array<unsigned char, 32> secret{};
  randombytes_buf(secret.data(), secret.size());
  const std::string text = to_hex(secret.data(), secret.size()) + "\n";
  sodium_memzero(secret.data(), secret.size());
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd < 0) throw std::runtime_error("cannot create token file " + path.string() + ": " + std::strerror(errno));
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  const int err = errno;
  ::close(fd);
  if (!ok) {
    std::filesystem::remove(path);
    throw std::runtime_error("cannot write token file " + path.string() + ": " + std::strerror(err));
  }
}

Token Token::from_secret(std::string secret) {
  if (secret.size() < kMinTokenBytes) throw std::runtime_error("a token needs at least 16 bytes");
  return Token(std::move(secret));
}

std::string Token::proof(std::string_view label, std::string_view nonce, std::string_view name) const {
  init_sodium();
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, reinterpret_cast<const unsigned char*>(secret_.data()), secret_.size());
  const unsigned char zero = 0;
  for (const auto part : {label, nonce, name}) {
    crypto_auth_hmacsha256_update(&st, reinterpret_cast<const unsigned char*>(part.data()), part.size());
    crypto_auth_hmacsha256_update(&st, &zero, 1);  // unambiguous boundaries
  }
  std::array<unsigned char, crypto_auth_hmacsha256_BYTES> mac{};
  crypto_auth_hmacsha256_final(&st, mac.data());
  return to_hex(mac.data(), mac.size());
}

bool Token::verify(std::string_view label, std::string_view nonce, std::string_view name, std::string_view proof_hex) const {
  const std::string expected = proof(label, nonce, name);
  if (proof_hex.size() != expected.size()) return false;
  return sodium_memcmp(expected.data(), proof_hex.data(), expected.size()) == 0;
}

std::string make_nonce() {
  init_sodium();
  std::array<unsigned char, 32> bytes{};
  randombytes_buf(bytes.data(), bytes.size());
  return to_hex(bytes.data(), bytes.size());
}

}  // namespace eesched::net
