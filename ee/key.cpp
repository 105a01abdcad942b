#include "ee/key.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <numeric>
#include <sstream>

#include <nlohmann/json.hpp>

#include "runtime/error.h"

namespace eesched::ee {
namespace {

using runtime::Error;

void init_sodium() {
  if (sodium_init() < 0) throw Error("libsodium failed to initialise");
}

std::string to_hex(const uint8_t* data, std::size_t n) {
  std::string hex(2 * n + 1, '\0');
  sodium_bin2hex(hex.data(), hex.size(), data, n);
  hex.pop_back();
  return hex;
}

// A deterministic stream of 64-bit words: ChaCha20 keyed by PRF(secret, label), in blocks, each
// block keyed by PRF(stream key, block counter) so the stream never runs dry.
class DerivedStream {
 public:
  DerivedStream(const std::array<uint8_t, Key::kSecretBytes>& secret, const std::string& label) {
    static_assert(Key::kSecretBytes == crypto_generichash_KEYBYTES);
    const std::string msg = std::string(kScheme) + "/v" + std::to_string(kSchemeVersion) + "/" + label;
    crypto_generichash(key_.data(), key_.size(), reinterpret_cast<const unsigned char*>(msg.data()), msg.size(),
                       secret.data(), secret.size());
  }
  ~DerivedStream() { sodium_memzero(key_.data(), key_.size()); }

  uint64_t next() {
    if (pos_ == buf_.size()) refill();
    return buf_[pos_++];
  }
  // Uniform in [0, bound) without modulo bias (rejection sampling).
  uint64_t below(uint64_t bound) {
    const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    uint64_t x;
    do x = next(); while (x >= limit);
    return x % bound;
  }

 private:
  void refill() {
    std::array<uint8_t, randombytes_SEEDBYTES> seed{};
    const uint64_t counter = block_++;
    crypto_generichash(seed.data(), seed.size(), reinterpret_cast<const unsigned char*>(&counter), sizeof counter, key_.data(),
                       key_.size());
    randombytes_buf_deterministic(buf_.data(), buf_.size() * sizeof(uint64_t), seed.data());
    sodium_memzero(seed.data(), seed.size());
    pos_ = 0;
  }
  std::array<uint8_t, Key::kSecretBytes> key_{};
  std::array<uint64_t, 512> buf_{};
  std::size_t pos_ = 512;
  uint64_t block_ = 0;
};

}  // namespace

Key Key::generate(int64_t vocab_size) {
  init_sodium();
  if (vocab_size < 2) throw Error("keygen: vocabulary size must be at least 2");
  Key k;
  randombytes_buf(k.secret_.data(), k.secret_.size());
  k.vocab_size_ = vocab_size;
  return k;
}

Key Key::from_secret(const std::array<uint8_t, kSecretBytes>& secret, int64_t vocab_size) {
  init_sodium();
  Key k;
  k.secret_ = secret;
  k.vocab_size_ = vocab_size;
  return k;
}

std::string Key::fingerprint() const {
  init_sodium();
  static const std::string domain = std::string(kScheme) + "/fingerprint";
  std::array<uint8_t, 16> fp{};
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, fp.size());
  crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(domain.data()), domain.size());
  crypto_generichash_update(&st, secret_.data(), secret_.size());
  crypto_generichash_final(&st, fp.data(), fp.size());
  return to_hex(fp.data(), fp.size());
}

void Key::save(const std::filesystem::path& path, bool force) const {
  nlohmann::json j = {{"scheme", kScheme},
                      {"version", kSchemeVersion},
                      {"vocab_size", vocab_size_},
                      {"secret", to_hex(secret_.data(), secret_.size())},
                      {"fingerprint", fingerprint()}};
  const std::string text = j.dump(2) + "\n";
  // O_EXCL unless forced: never clobber a key by accident. Mode 0600 from the first byte on.
  const int flags = O_WRONLY | O_CREAT | (force ? O_TRUNC : O_EXCL);
  const int fd = ::open(path.c_str(), flags, 0600);
  if (fd < 0) {
    if (errno == EEXIST) throw Error(path.string() + " already exists (pass --force to overwrite a key)");
    throw Error("cannot write " + path.string() + ": " + std::strerror(errno));
  }
  bool ok = ::fchmod(fd, 0600) == 0;
  std::size_t done = 0;
  while (ok && done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) done += static_cast<std::size_t>(n);
  }
  const int saved = errno;
  ok = (::fsync(fd) == 0) && ok;
  ok = (::close(fd) == 0) && ok;
  if (!ok) {
    std::error_code ec;
    std::filesystem::remove(path, ec);
    throw Error("cannot write " + path.string() + ": " + std::strerror(saved ? saved : errno));
  }
}

Key Key::load(const std::filesystem::path& path) {
  init_sodium();
  std::ifstream in(path);
  if (!in) throw Error("cannot read key file " + path.string() + ": " + std::strerror(errno));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception&) {
    throw Error(path.string() + ": not a key file (invalid JSON; truncated?)");
  }
  const std::string origin = path.string() + ": ";
  if (!j.is_object() || j.value("scheme", std::string()) != kScheme) throw Error(origin + "not an eesched key file");
  if (!j.contains("version") || !j["version"].is_number_integer()) throw Error(origin + "missing key version");
  if (j["version"].get<int>() != kSchemeVersion)
    throw Error(origin + "key version " + std::to_string(j["version"].get<int>()) + " is not supported (this build reads version " +
                std::to_string(kSchemeVersion) + ")");
  if (!j.contains("vocab_size") || !j["vocab_size"].is_number_integer() || j["vocab_size"].get<int64_t>() < 2)
    throw Error(origin + "missing or invalid vocab_size");
  if (!j.contains("secret") || !j["secret"].is_string()) throw Error(origin + "missing secret");
  const auto hex = j["secret"].get<std::string>();
  Key k;
  std::size_t len = 0;
  if (hex.size() != 2 * kSecretBytes ||
      sodium_hex2bin(k.secret_.data(), k.secret_.size(), hex.data(), hex.size(), nullptr, &len, nullptr) != 0 || len != kSecretBytes)
    throw Error(origin + "the secret must be " + std::to_string(2 * kSecretBytes) + " hex digits");
  k.vocab_size_ = j["vocab_size"].get<int64_t>();
  if (j.contains("fingerprint") && j["fingerprint"] != k.fingerprint())
    throw Error(origin + "the fingerprint does not match the secret (corrupted key file)");
  return k;
}

std::vector<int64_t> Key::permutation(const std::string& label, int64_t n) const {
  if (n < 1) throw Error("permutation of an empty set");
  std::vector<int64_t> p(static_cast<std::size_t>(n));
  std::iota(p.begin(), p.end(), 0);
  DerivedStream stream(secret_, label);
  for (int64_t i = n - 1; i > 0; --i) {  // Fisher-Yates
    const auto j = static_cast<int64_t>(stream.below(static_cast<uint64_t>(i) + 1));
    std::swap(p[static_cast<std::size_t>(i)], p[static_cast<std::size_t>(j)]);
  }
  return p;
}

std::vector<double> Key::angles(const std::string& label, int64_t n) const {
  DerivedStream stream(secret_, label);
  std::vector<double> a(static_cast<std::size_t>(n));
  for (auto& x : a) x = 2.0 * M_PI * static_cast<double>(stream.next() >> 11) * 0x1.0p-53;  // 53 random bits
  return a;
}

std::vector<int64_t> inverse(const std::vector<int64_t>& p) {
  std::vector<int64_t> inv(p.size());
  for (std::size_t i = 0; i < p.size(); ++i) inv[static_cast<std::size_t>(p[i])] = static_cast<int64_t>(i);
  return inv;
}

}  // namespace eesched::ee
