#pragma once
// safetensors I/O (https://huggingface.co/docs/safetensors): an 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}},
// then the raw little-endian tensor bytes. Files are memory-mapped and the header is fully
// validated on open, so a truncated or inconsistent file fails with one line naming the tensor.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace eesched::runtime {

enum class DType { F32, F16, BF16, F64, I8, U8, I16, I32, I64, BOOL };

const char* dtype_name(DType d);          // "F32", "F16", ... as written in the header
std::size_t dtype_size(DType d);          // bytes per element

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data section (after the header)
  uint64_t end = 0;
  int64_t numel() const;
};

class SafetensorsFile {
 public:
  // Maps the file and validates the header; throws runtime::Error with a one-line reason.
  static SafetensorsFile open(const std::filesystem::path& path);

  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;
  ~SafetensorsFile();

  const std::filesystem::path& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }   // in file order
  const TensorInfo* find(const std::string& name) const;                // nullptr if absent
  bool contains(const std::string& name) const { return find(name) != nullptr; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // Copies one tensor out of the mapping into an owned, contiguous CPU tensor of its stored
  // dtype. Throws if the name is absent.
  at::Tensor load(const std::string& name) const;
  // Copies one tensor into `dst` (same shape, any floating dtype: converted on the way, e.g.
  // bf16 widened to f32), then drops the source pages from this process's resident set, so
  // reading a whole checkpoint tensor by tensor never holds the file and its copy at once.
  void read_into(const std::string& name, const at::Tensor& dst) const;

 private:
  SafetensorsFile() = default;
  struct Mapping;
  std::unique_ptr<Mapping> map_;
  std::filesystem::path path_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Writes tensors (any of the dtypes above, CPU, made contiguous) in the given order.
// Writes to a temporary file in the same directory and renames it into place, so a failure
// (full disk, bad path) leaves no partial file behind and throws runtime::Error.
void write_safetensors(const std::filesystem::path& path,
                       const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace eesched::runtime
