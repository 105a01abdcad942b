#pragma once
// The boundary between the runtime and libsentencepiece, which is built into its own module.
//
// Why: Debian's libsentencepiece carries a private copy of protobuf 3.14 and exports its
// symbols, while libtorch loads the system protobuf 3.21. In one global symbol scope each binds
// to the other's functions and the process crashes at start-up or fails protobuf's version
// check. The module links sentencepiece only and is loaded with dlopen(RTLD_LOCAL |
// RTLD_DEEPBIND), so it resolves to its own protobuf and exports nothing to the rest.
//
// Only this abstract interface (virtual calls, std types from the one shared libstdc++) crosses
// the boundary. Every method reports failure as a non-empty error string.
#include <cstdint>
#include <string>
#include <vector>

namespace eesched::runtime {

class SpmModule {
 public:
  virtual ~SpmModule() = default;
  virtual std::string load(const std::string& model_file) = 0;
  virtual std::string encode(const std::string& text, std::vector<int>& ids) const = 0;
  virtual std::string decode(const std::vector<int>& ids, std::string& text) const = 0;
  virtual int piece_size() const = 0;
  virtual int bos_id() const = 0;
  virtual int eos_id() const = 0;
  virtual bool is_control(int id) const = 0;
  virtual std::string train(const std::string& args) = 0;
};

}  // namespace eesched::runtime

// The module's one exported symbol.
extern "C" eesched::runtime::SpmModule* eesched_spm_module_create();
