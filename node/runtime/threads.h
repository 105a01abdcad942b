#pragma once
// Intra-op parallelism: LibTorch's OpenMP pool and OpenBLAS's own pool, set together.
namespace eesched::runtime {

// n <= 0 means all cores. Returns the count in effect.
int set_threads(int n);
int hardware_threads();
// "openblas" when libblas.so.3 resolves to OpenBLAS, else the library's path (reference BLAS
// is ~10x slower for the matmuls the runtime does).
const char* blas_backend();

}  // namespace eesched::runtime
