#include "runtime/safetensors.h"

#include "runtime/error.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <c10/core/ScalarType.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <string_view>
#include <system_error>

namespace eesched::runtime {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; big-endian hosts are not supported");

namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;  // 100 MB, as in the reference impl
constexpr const char* kMetadataKey = "__metadata__";

constexpr DType kAllDTypes[] = {DType::F32, DType::F16, DType::BF16, DType::F64, DType::I8,
                                DType::U8,  DType::I16, DType::I32,  DType::I64, DType::BOOL};

bool parse_dtype(std::string_view s, DType& out) {
  for (DType d : kAllDTypes) {
    if (s == dtype_name(d)) {
      out = d;
      return true;
    }
  }
  return false;
}

at::ScalarType to_scalar_type(DType d) {
  switch (d) {
    case DType::F32: return at::kFloat;
    case DType::F16: return at::kHalf;
    case DType::BF16: return at::kBFloat16;
    case DType::F64: return at::kDouble;
    case DType::I8: return at::kChar;
    case DType::U8: return at::kByte;
    case DType::I16: return at::kShort;
    case DType::I32: return at::kInt;
    case DType::I64: return at::kLong;
    case DType::BOOL: return at::kBool;
  }
  throw Error("internal error: bad safetensors dtype");
}

bool from_scalar_type(at::ScalarType st, DType& out) {
  switch (st) {
    case at::kFloat: out = DType::F32; return true;
    case at::kHalf: out = DType::F16; return true;
    case at::kBFloat16: out = DType::BF16; return true;
    case at::kDouble: out = DType::F64; return true;
    case at::kChar: out = DType::I8; return true;
    case at::kByte: out = DType::U8; return true;
    case at::kShort: out = DType::I16; return true;
    case at::kInt: out = DType::I32; return true;
    case at::kLong: out = DType::I64; return true;
    case at::kBool: out = DType::BOOL; return true;
    default: return false;
  }
}

std::string errno_text(int err) { return std::generic_category().message(err); }

// Keeps user-controlled strings (tensor names, JSON snippets) from breaking the one-line rule.
std::string one_line(std::string_view s, std::size_t max_len = 200) {
  std::string out;
  out.reserve(std::min(s.size(), max_len));
  for (char c : s) {
    if (out.size() >= max_len) {
      out += "...";
      break;
    }
    const auto u = static_cast<unsigned char>(c);
    out += (u < 0x20 || u == 0x7f) ? '?' : c;
  }
  return out;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

// Non-negative JSON integer that fits in uint64; false for floats, negatives, other types.
bool as_u64(const nlohmann::json& j, uint64_t& out) {
  if (j.is_number_unsigned()) {
    out = j.get<uint64_t>();
    return true;
  }
  if (j.is_number_integer()) {
    const auto v = j.get<int64_t>();
    if (v < 0) return false;
    out = static_cast<uint64_t>(v);
    return true;
  }
  return false;
}

// Writes all of buf to fd, retrying on EINTR and short writes; returns 0 or an errno value.
int write_all(int fd, const void* buf, std::size_t len) {
  const char* p = static_cast<const char*>(buf);
  while (len > 0) {
    const std::size_t chunk = std::min<std::size_t>(len, std::size_t{1} << 30);
    const ssize_t n = ::write(fd, p, chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return EIO;
    p += n;
    len -= static_cast<std::size_t>(n);
  }
  return 0;
}

}  // namespace

const char* dtype_name(DType d) {
  switch (d) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F64: return "F64";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::I16: return "I16";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
    case DType::BOOL: return "BOOL";
  }
  return "?";
}

std::size_t dtype_size(DType d) {
  switch (d) {
    case DType::F64:
    case DType::I64: return 8;
    case DType::F32:
    case DType::I32: return 4;
    case DType::F16:
    case DType::BF16:
    case DType::I16: return 2;
    case DType::I8:
    case DType::U8:
    case DType::BOOL: return 1;
  }
  return 0;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // validated on open: no overflow
  return n;
}

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

struct SafetensorsFile::Mapping {
  int fd = -1;
  void* addr = nullptr;
  std::size_t size = 0;
  std::size_t data_offset = 0;  // 8 + header length

  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (addr != nullptr && addr != MAP_FAILED) ::munmap(addr, size);
    if (fd >= 0) ::close(fd);
  }
  const unsigned char* bytes() const { return static_cast<const unsigned char*>(addr); }
};

SafetensorsFile::SafetensorsFile(SafetensorsFile&&) noexcept = default;
SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&&) noexcept = default;
SafetensorsFile::~SafetensorsFile() = default;

SafetensorsFile SafetensorsFile::open(const std::filesystem::path& path) {
  const std::string where = path.string();
  auto fail = [&](const std::string& why) -> Error { return Error(where + ": " + why); };

  SafetensorsFile file;
  file.path_ = path;
  file.map_ = std::make_unique<Mapping>();
  Mapping& m = *file.map_;

  m.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (m.fd < 0) throw Error("cannot open " + where + ": " + errno_text(errno));
  struct stat st {};
  if (::fstat(m.fd, &st) != 0) throw Error("cannot open " + where + ": " + errno_text(errno));
  if (S_ISDIR(st.st_mode)) throw Error("cannot open " + where + ": " + errno_text(EISDIR));
  if (!S_ISREG(st.st_mode)) throw Error("cannot open " + where + ": not a regular file");

  const auto file_size = static_cast<uint64_t>(st.st_size);
  if (file_size == 0) throw fail("file is empty, not a safetensors file");
  if (file_size < 8)
    throw fail("file is too small for a safetensors header (" + std::to_string(file_size) +
               " bytes)");
  if (file_size > std::numeric_limits<std::size_t>::max()) throw fail("file is too large to map");

  m.size = static_cast<std::size_t>(file_size);
  void* addr = ::mmap(nullptr, m.size, PROT_READ, MAP_PRIVATE, m.fd, 0);
  if (addr == MAP_FAILED) throw Error("cannot map " + where + ": " + errno_text(errno));
  m.addr = addr;
  const unsigned char* bytes = m.bytes();

  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  if (header_len > file_size - 8)
    throw fail("header length " + std::to_string(header_len) + " exceeds the file size (" +
               std::to_string(file_size) + " bytes); not a safetensors file or truncated");
  if (header_len > kMaxHeaderBytes)
    throw fail("header length " + std::to_string(header_len) + " exceeds the " +
               std::to_string(kMaxHeaderBytes) + "-byte limit");
  if (header_len < 2) throw fail("header is empty");
  m.data_offset = static_cast<std::size_t>(8 + header_len);
  const uint64_t data_size = file_size - 8 - header_len;

  // Trailing spaces (and, leniently, NULs) are alignment padding.
  const char* hdr = reinterpret_cast<const char*>(bytes + 8);
  std::size_t hdr_len = static_cast<std::size_t>(header_len);
  while (hdr_len > 0 && (hdr[hdr_len - 1] == ' ' || hdr[hdr_len - 1] == '\0')) --hdr_len;

  // Duplicate top-level keys would silently shadow each other in the parsed object.
  std::set<std::string> seen_keys;
  std::string duplicate_key;
  nlohmann::json::parser_callback_t on_event = [&](int depth, nlohmann::json::parse_event_t event,
                                                   nlohmann::json& parsed) {
    if (event == nlohmann::json::parse_event_t::key && depth == 1 && parsed.is_string()) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!seen_keys.insert(key).second && duplicate_key.empty()) duplicate_key = key;
    }
    return true;
  };

  nlohmann::json header;
  try {
    header = nlohmann::json::parse(hdr, hdr + hdr_len, on_event);
  } catch (const nlohmann::json::parse_error& e) {
    throw fail("header is not valid JSON (error at byte " + std::to_string(e.byte) + ")");
  } catch (const nlohmann::json::exception&) {
    throw fail("header is not valid JSON");
  }
  if (!header.is_object()) throw fail("header is not a JSON object");
  if (!duplicate_key.empty())
    throw fail("header lists '" + one_line(duplicate_key) + "' more than once");

  for (const auto& [key, value] : header.items()) {
    if (key == kMetadataKey) {
      if (value.is_null()) continue;
      if (!value.is_object()) throw fail("__metadata__ is not a JSON object");
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string())
          throw fail("__metadata__ value for '" + one_line(mk) + "' is not a string");
        file.metadata_.emplace(mk, mv.get<std::string>());
      }
      continue;
    }

    const std::string tname = "tensor '" + one_line(key) + "'";
    if (!value.is_object()) throw fail(tname + " entry is not a JSON object");

    TensorInfo info;
    info.name = key;

    const auto dt = value.find("dtype");
    if (dt == value.end() || !dt->is_string()) throw fail(tname + " has no string \"dtype\"");
    if (!parse_dtype(dt->get_ref<const std::string&>(), info.dtype))
      throw fail(tname + " has unsupported dtype '" +
                 one_line(dt->get_ref<const std::string&>()) + "'");

    const auto sh = value.find("shape");
    if (sh == value.end() || !sh->is_array()) throw fail(tname + " has no \"shape\" array");
    uint64_t numel = 1;
    bool numel_overflow = false;
    for (const auto& d : *sh) {
      uint64_t dim = 0;
      if (!as_u64(d, dim) || dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        throw fail(tname + " shape " + one_line(sh->dump()) +
                   " is not a list of non-negative integers");
      info.shape.push_back(static_cast<int64_t>(dim));
      if (__builtin_mul_overflow(numel, dim, &numel)) numel_overflow = true;
    }
    // A zero dimension makes the product 0 regardless of earlier wraparound.
    if (std::find(info.shape.begin(), info.shape.end(), 0) != info.shape.end()) {
      numel = 0;
      numel_overflow = false;
    }
    uint64_t nbytes = 0;
    if (numel_overflow || numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        __builtin_mul_overflow(numel, static_cast<uint64_t>(dtype_size(info.dtype)), &nbytes))
      throw fail(tname + " shape " + shape_text(info.shape) + " is too large");

    const auto off = value.find("data_offsets");
    if (off == value.end() || !off->is_array() || off->size() != 2 ||
        !as_u64((*off)[0], info.begin) || !as_u64((*off)[1], info.end))
      throw fail(tname + " \"data_offsets\" is not a pair of non-negative integers");
    const std::string offsets =
        "data_offsets [" + std::to_string(info.begin) + ", " + std::to_string(info.end) + "]";
    if (info.begin > info.end) throw fail(tname + " " + offsets + " are reversed");
    if (info.end - info.begin != nbytes)
      throw fail(tname + " " + offsets + " span " + std::to_string(info.end - info.begin) +
                 " bytes but " + dtype_name(info.dtype) + " shape " + shape_text(info.shape) +
                 " needs " + std::to_string(nbytes));

    file.tensors_.push_back(std::move(info));
  }

  // File order: by data offset. Bounds are checked in that order, so a truncated file names
  // the first tensor that runs past the end.
  std::sort(file.tensors_.begin(), file.tensors_.end(),
            [](const TensorInfo& a, const TensorInfo& b) {
              if (a.begin != b.begin) return a.begin < b.begin;
              if (a.end != b.end) return a.end < b.end;
              return a.name < b.name;
            });
  const TensorInfo* furthest = nullptr;  // tensor with the largest end so far
  for (const TensorInfo& t : file.tensors_) {
    if (t.end > data_size)
      throw fail("tensor '" + one_line(t.name) + "' data_offsets [" + std::to_string(t.begin) +
                 ", " + std::to_string(t.end) + "] exceed the data section (" +
                 std::to_string(data_size) + " bytes); the file is truncated or corrupt");
    if (furthest != nullptr && t.begin < furthest->end && t.end > t.begin)
      throw fail("tensors '" + one_line(furthest->name) + "' [" +
                 std::to_string(furthest->begin) + ", " + std::to_string(furthest->end) +
                 "] and '" + one_line(t.name) + "' [" + std::to_string(t.begin) + ", " +
                 std::to_string(t.end) + "] overlap");
    if (furthest == nullptr || t.end > furthest->end) furthest = &t;
  }
  return file;
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  for (const TensorInfo& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

at::Tensor SafetensorsFile::load(const std::string& name) const {
  const TensorInfo* info = find(name);
  if (info == nullptr) throw Error(path_.string() + ": no tensor named '" + one_line(name) + "'");
  if (!map_) throw Error(path_.string() + ": file is not open");

  const std::size_t nbytes = static_cast<std::size_t>(info->end - info->begin);
  const unsigned char* src = map_->bytes() + map_->data_offset + info->begin;
  if (info->dtype == DType::BOOL) {
    for (std::size_t i = 0; i < nbytes; ++i)
      if (src[i] > 1)
        throw Error(path_.string() + ": tensor '" + one_line(name) +
                    "' holds a BOOL byte that is neither 0 nor 1");
  }
  at::Tensor out =
      at::empty(info->shape, at::TensorOptions().dtype(to_scalar_type(info->dtype)));
  if (nbytes > 0) std::memcpy(out.data_ptr(), src, nbytes);
  return out;
}

void SafetensorsFile::read_into(const std::string& name, const at::Tensor& dst) const {
  const TensorInfo* info = find(name);
  if (info == nullptr) throw Error(path_.string() + ": no tensor named '" + one_line(name) + "'");
  if (!map_) throw Error(path_.string() + ": file is not open");
  if (dst.sizes().vec() != info->shape)
    throw Error(path_.string() + ": tensor '" + one_line(name) + "' does not have the expected shape");
  const std::size_t nbytes = static_cast<std::size_t>(info->end - info->begin);
  if (nbytes == 0) return;
  auto* src = const_cast<unsigned char*>(map_->bytes() + map_->data_offset + info->begin);
  const auto view = at::from_blob(src, info->shape, at::TensorOptions().dtype(to_scalar_type(info->dtype)));
  dst.copy_(view);  // never writes to `view`: the mapping is read-only
  // A private read-only file mapping: MADV_DONTNEED only forgets clean pages (reread on demand).
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto lo = (reinterpret_cast<uintptr_t>(src) + page - 1) / page * page;
  const auto hi = (reinterpret_cast<uintptr_t>(src) + nbytes) / page * page;
  if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
}

// ---------------------------------------------------------------------------------------------
// Writing

void write_safetensors(const std::filesystem::path& path,
                       const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const std::string where = path.string();
  auto fail = [&](const std::string& why) -> Error {
    return Error("cannot write " + where + ": " + why);
  };

  // Header first (from sizes alone), so a bad argument fails before anything touches the disk.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json md = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) md[k] = v;
    header[kMetadataKey] = std::move(md);
  }
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    const std::string tname = "tensor '" + one_line(name) + "'";
    if (name == kMetadataKey) throw fail("'__metadata__' is reserved and cannot name a tensor");
    if (!names.insert(name).second) throw fail(tname + " is listed more than once");
    if (!tensor.defined()) throw fail(tname + " is undefined");
    DType dt{};
    if (!from_scalar_type(tensor.scalar_type(), dt))
      throw fail(tname + " has unsupported dtype " + c10::toString(tensor.scalar_type()));
    const uint64_t nbytes = static_cast<uint64_t>(tensor.numel()) * dtype_size(dt);
    header[name] = {{"dtype", dtype_name(dt)},
                    {"shape", tensor.sizes().vec()},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }

  std::string header_text;
  try {
    header_text = header.dump();
  } catch (const nlohmann::json::exception&) {
    throw fail("a tensor name or metadata string is not valid UTF-8");
  }
  header_text.append((8 - (8 + header_text.size()) % 8) % 8, ' ');
  unsigned char len_bytes[8];
  uint64_t header_len = header_text.size();
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<unsigned char>(header_len >> (8 * i));

  const std::filesystem::path tmp =
      path.parent_path() /
      (path.filename().string() + ".tmp." + std::to_string(static_cast<long>(::getpid())));
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw fail(errno_text(errno));

  auto abandon = [&](const std::string& why) -> Error {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    return fail(why);
  };

  if (int err = write_all(fd, len_bytes, sizeof len_bytes)) throw abandon(errno_text(err));
  if (int err = write_all(fd, header_text.data(), header_text.size()))
    throw abandon(errno_text(err));
  for (const auto& [name, tensor] : tensors) {
    at::Tensor data;
    try {
      data = tensor.contiguous().cpu();
    } catch (const std::exception&) {
      throw abandon("cannot copy tensor '" + one_line(name) + "' to the CPU");
    }
    const std::size_t nbytes = data.nbytes();
    if (nbytes == 0) continue;
    if (int err = write_all(fd, data.data_ptr(), nbytes)) throw abandon(errno_text(err));
  }
  if (::fsync(fd) != 0) throw abandon(errno_text(errno));
  const int rc = ::close(fd);
  fd = -1;
  if (rc != 0) throw abandon(errno_text(errno));

  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    ::unlink(tmp.c_str());
    throw fail(ec.message());
  }
  // Make the rename itself durable; failure here does not lose data already written.
  const std::filesystem::path dir = path.parent_path().empty() ? "." : path.parent_path();
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace eesched::runtime
