#include "runtime/threads.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <malloc.h>

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
  using GetParallel = int (*)();
  if (auto fn = reinterpret_cast<GetParallel>(dlsym(RTLD_DEFAULT, "openblas_get_parallel"))) {
    switch (fn()) {
      case 2: return "openblas-openmp";
      case 1: return "openblas-pthreads";
      default: return "openblas-sequential";
    }
  }
  Dl_info info{};
  if (auto sym = dlsym(RTLD_DEFAULT, "sgemm_"); sym && dladdr(sym, &info) && info.dli_fname) return info.dli_fname;
  return "unknown";
}

void tune_allocator() {
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

}  // namespace eesched::runtime
