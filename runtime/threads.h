#pragma once
// Intra-op parallelism: LibTorch's OpenMP pool and OpenBLAS's own pool, set together.
namespace eesched::runtime {

// n <= 0 means all cores. Returns the count in effect.
int set_threads(int n);
int hardware_threads();
// "openblas-openmp" (one thread pool with LibTorch: what setup selects), "openblas-pthreads"
// (a second pool that oversubscribes the cores), or the BLAS library's path (the reference BLAS
// is ~10x slower).
const char* blas_backend();

// Process-wide allocator settings for inference: keep large blocks in the heap instead of
// returning them to the OS after every forward pass (mmap/munmap churn cost ~25% in system time).
void tune_allocator();

}  // namespace eesched::runtime
