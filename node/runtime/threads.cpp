#include "node/runtime/threads.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>

#include <thread>

namespace eesched::runtime {

int hardware_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

int set_threads(int n) {
  if (n <= 0) n = hardware_threads();
  at::set_num_threads(n);
  // OpenBLAS keeps its own thread pool; LibTorch does not size it. Look it up at run time so the
  // binary still runs (slowly) against another BLAS.
  using SetThreads = void (*)(int);
  if (auto fn = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) fn(n);
  return n;
}

const char* blas_backend() {
  if (dlsym(RTLD_DEFAULT, "openblas_get_config")) return "openblas";
  Dl_info info{};
  if (auto sym = dlsym(RTLD_DEFAULT, "sgemm_"); sym && dladdr(sym, &info) && info.dli_fname) return info.dli_fname;
  return "unknown";
}

}  // namespace eesched::runtime
