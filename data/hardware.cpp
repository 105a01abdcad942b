#include "data/hardware.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>

#include <nlohmann/json.hpp>
#include <random>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "data/error.h"
#include "data/time.h"

namespace eesched::data {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Runs fn(0..n-1) on n threads and waits for all of them.
template <class Fn>
void parallel(int n, Fn fn) {
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(n));
  for (int t = 0; t < n; ++t) pool.emplace_back(fn, t);
  for (auto& th : pool) th.join();
}

// Square f32 matmul C = A B, n = 512: 268 MFLOP per pass, big enough to leave L1 and small
// enough that one pass takes tens of milliseconds even on one slow core.
constexpr int kN = 512;
constexpr int kBlockK = 128;  // a 128 x 256 tile of B (128 KiB) stays in L2
constexpr int kBlockJ = 256;  // four 256-float rows of C (4 KiB) stay in L1

// Rows [i0, i1) of C, i1 - i0 a multiple of 4. Four rows of C share every load of B, and the
// inner loop is unit-stride so -O3 vectorizes it without intrinsics.
void matmul_rows(const float* a, const float* b, float* c, int i0, int i1) {
  std::fill(c + static_cast<size_t>(i0) * kN, c + static_cast<size_t>(i1) * kN, 0.0f);
  for (int kk = 0; kk < kN; kk += kBlockK) {
    for (int jj = 0; jj < kN; jj += kBlockJ) {
      for (int i = i0; i < i1; i += 4) {
        float* __restrict c0 = c + static_cast<size_t>(i) * kN + jj;
        float* __restrict c1 = c0 + kN;
        float* __restrict c2 = c1 + kN;
        float* __restrict c3 = c2 + kN;
        for (int k = kk; k < kk + kBlockK; ++k) {
          const float* __restrict bk = b + static_cast<size_t>(k) * kN + jj;
          const float a0 = a[static_cast<size_t>(i) * kN + k];
          const float a1 = a[static_cast<size_t>(i + 1) * kN + k];
          const float a2 = a[static_cast<size_t>(i + 2) * kN + k];
          const float a3 = a[static_cast<size_t>(i + 3) * kN + k];
          for (int j = 0; j < kBlockJ; ++j) {
            const float bv = bk[j];
            c0[j] += a0 * bv;
            c1[j] += a1 * bv;
            c2[j] += a2 * bv;
            c3[j] += a3 * bv;
          }
        }
      }
    }
  }
}

double measure_gflops(int threads) {
  std::vector<float> a(static_cast<size_t>(kN) * kN), b(a.size()), c(a.size());
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (auto& x : a) x = dist(rng);
  for (auto& x : b) x = dist(rng);
  const int quads = kN / 4;
  const int workers = std::min(threads, quads);
  auto pass = [&] {
    parallel(workers, [&](int t) {
      const int q0 = quads * t / workers, q1 = quads * (t + 1) / workers;
      matmul_rows(a.data(), b.data(), c.data(), 4 * q0, 4 * q1);
    });
  };
  pass();  // warm-up: page faults, thread start, caches
  // Best of several passes within ~0.2 s: the best pass is the least disturbed by neighbours.
  double best = 1e30;
  const auto t0 = Clock::now();
  for (int rep = 0; rep < 20 && (rep < 2 || seconds_since(t0) < 0.2); ++rep) {
    const auto t = Clock::now();
    pass();
    best = std::min(best, seconds_since(t));
  }
  volatile float sink = c[0] + c[c.size() - 1];  // keeps the work observable
  (void)sink;
  return 2.0 * kN * kN * kN / best / 1e9;
}

// An uninitialized buffer aligned for 2 MiB pages: with transparent huge pages, touching
// 512 MiB costs 256 page faults instead of 131072, which is most of the measuring time.
struct HugeBuffer {
  explicit HugeBuffer(size_t bytes) : data(static_cast<char*>(std::aligned_alloc(kHugePage, bytes))) {
    if (!data) throw Error("hardware profile: cannot allocate " + std::to_string(bytes >> 20) + " MiB");
    madvise(data, bytes, MADV_HUGEPAGE);  // a hint; without THP it is just slower
  }
  ~HugeBuffer() { std::free(data); }
  HugeBuffer(const HugeBuffer&) = delete;
  HugeBuffer& operator=(const HugeBuffer&) = delete;
  static constexpr size_t kHugePage = size_t{2} << 20;
  char* data;
};

double measure_copy_gbps(int threads, int64_t mem_free) {
  // 256 MiB each way: well above a CPU die's last-level cache. Capped at an eighth of free
  // memory so a small machine is not pushed into swap; a multiple of the huge page size.
  size_t bytes = size_t{256} << 20;
  if (mem_free > 0) bytes = std::min<size_t>(bytes, static_cast<size_t>(mem_free / 8));
  bytes = std::max<size_t>(bytes & ~(HugeBuffer::kHugePage - 1), HugeBuffer::kHugePage * 8);
  HugeBuffer src(bytes), dst(bytes);
  auto slice = [&](int t) {
    const size_t lo = bytes * static_cast<size_t>(t) / static_cast<size_t>(threads);
    const size_t hi = bytes * static_cast<size_t>(t + 1) / static_cast<size_t>(threads);
    return std::pair{lo, hi - lo};
  };
  // First touch from the threads that copy later, so pages land on their NUMA nodes.
  parallel(threads, [&](int t) {
    const auto [lo, n] = slice(t);
    std::memset(src.data + lo, 1, n);
    std::memset(dst.data + lo, 0, n);
  });
  double best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = Clock::now();
    parallel(threads, [&](int t) {
      const auto [lo, n] = slice(t);
      std::memcpy(dst.data + lo, src.data + lo, n);
    });
    best = std::min(best, seconds_since(t0));
  }
  volatile char sink = dst.data[bytes / 2];
  (void)sink;
  return static_cast<double>(bytes) / best / 1e9;
}

constexpr int kProbes = 5;

double median_of(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
  return v[v.size() / 2];
}

std::string read_cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    // x86 says "model name"; some ARM kernels say "Model" or only "Hardware".
    if (line.rfind("model name", 0) == 0 || line.rfind("Model", 0) == 0 || line.rfind("Hardware", 0) == 0) {
      const auto colon = line.find(':');
      if (colon == std::string::npos) continue;
      auto value = line.substr(colon + 1);
      value.erase(0, value.find_first_not_of(" \t"));
      if (!value.empty()) return value;
    }
  }
  return "unknown";
}

// {MemTotal, MemAvailable} in bytes; zeros when /proc/meminfo is missing.
std::pair<int64_t, int64_t> read_meminfo() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  int64_t kib = 0, total = 0, available = 0, free = 0;
  std::string unit;
  while (in >> key >> kib) {
    std::getline(in, unit);
    if (key == "MemTotal:") total = kib * 1024;
    if (key == "MemAvailable:") available = kib * 1024;
    if (key == "MemFree:") free = kib * 1024;
  }
  return {total, available > 0 ? available : free};  // kernels before 3.14 lack MemAvailable
}

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "unknown";
  return buf;
}

int resolve_threads(int threads) {
  if (threads > 0) return threads;
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

std::filesystem::path default_cache_dir() {
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) return std::filesystem::path(xdg) / "eesched";
  if (const char* home = std::getenv("HOME"); home && *home) return std::filesystem::path(home) / ".cache" / "eesched";
  return std::filesystem::temp_directory_path() / "eesched";
}

// A host name made safe for a file name.
std::string file_safe(std::string s) {
  for (char& ch : s)
    if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '-' || ch == '_')) ch = '_';
  return s;
}

}  // namespace

HardwareProfile measure_hardware(int threads) {
  HardwareProfile p;
  p.host = host_name();
  p.cpu_model = read_cpu_model();
  p.threads = resolve_threads(threads);
  std::tie(p.mem_total_bytes, p.mem_free_bytes) = read_meminfo();
  // The median of several probes, compute and bandwidth interleaved: one probe is the best of
  // a few passes, but a burst of interference lasting longer than a probe (a neighbour's build, a
  // page-cache flush) still moves it by 30% or more, and a selector reading a slow 2-thread
  // machine as a 1-thread one picks the wrong arms. The median ignores up to two such probes.
  std::vector<double> gflops, gbps;
  for (int probe = 0; probe < kProbes; ++probe) {
    gflops.push_back(measure_gflops(p.threads));
    gbps.push_back(measure_copy_gbps(p.threads, p.mem_free_bytes));
  }
  p.gflops = median_of(gflops);
  p.copy_gbps = median_of(gbps);
  p.measured_at = iso_utc_now();
  return p;
}

HardwareProfile load_or_measure_hardware(const std::filesystem::path& cache_dir, int threads) {
  namespace fs = std::filesystem;
  const int n = resolve_threads(threads);
  const std::string host = host_name();
  const fs::path dir = cache_dir.empty() ? default_cache_dir() : cache_dir;
  // "v2": the median of kProbes probes; a cache of the single probe before it is measured over.
  const fs::path file = dir / ("hardware-v2-" + file_safe(host) + "-" + std::to_string(n) + ".json");

  try {
    std::ifstream in(file);
    if (in) {
      auto p = nlohmann::json::parse(in).get<HardwareProfile>();
      if (p.host == host && p.threads == n && p.gflops > 0 && p.copy_gbps > 0) {
        std::tie(p.mem_total_bytes, p.mem_free_bytes) = read_meminfo();
        return p;
      }
    }
  } catch (const std::exception&) {
    // A corrupt or foreign cache file is simply measured over.
  }

  auto p = measure_hardware(n);
  // Write-then-rename, so a concurrent reader never sees half a file.
  std::error_code ec;
  fs::create_directories(dir, ec);
  const fs::path tmp = file.string() + ".tmp." + std::to_string(getpid());
  {
    std::ofstream out(tmp);
    out << nlohmann::json(p).dump(2) << "\n";
    if (!out) ec = std::make_error_code(std::errc::io_error);
  }
  if (!ec) fs::rename(tmp, file, ec);
  if (ec) fs::remove(tmp, ec);
  return p;
}

void to_json(nlohmann::json& j, const HardwareProfile& p) {
  j = nlohmann::json{{"host", p.host},
                     {"cpu_model", p.cpu_model},
                     {"threads", p.threads},
                     {"gflops", p.gflops},
                     {"copy_gbps", p.copy_gbps},
                     {"mem_total_bytes", p.mem_total_bytes},
                     {"mem_free_bytes", p.mem_free_bytes},
                     {"measured_at", p.measured_at}};
}

namespace {

// An integer field in [lo, hi]: a float (1e100 would be undefined behaviour to convert, 2.5
// would truncate) or an out-of-range value is refused, not narrowed. Found by fuzzing.
int64_t integer_field(const nlohmann::json& j, const char* name, int64_t lo, int64_t hi) {
  const auto& v = j.at(name);
  if (!v.is_number_integer()) throw Error(std::string("hardware profile: ") + name + " must be an integer");
  if (v.is_number_unsigned() ? v.get<uint64_t>() > static_cast<uint64_t>(hi) : (v.get<int64_t>() < lo || v.get<int64_t>() > hi))
    throw Error(std::string("hardware profile: ") + name + " is out of range");
  return v.get<int64_t>();
}

}  // namespace

void from_json(const nlohmann::json& j, HardwareProfile& p) {
  try {
    if (!j.is_object()) throw Error("hardware profile: must be an object");
    p.host = j.at("host").get<std::string>();
    p.cpu_model = j.at("cpu_model").get<std::string>();
    p.threads = static_cast<int>(integer_field(j, "threads", 0, 1 << 16));
    p.gflops = j.at("gflops").get<double>();
    p.copy_gbps = j.at("copy_gbps").get<double>();
    p.mem_total_bytes = integer_field(j, "mem_total_bytes", 0, std::numeric_limits<int64_t>::max());
    p.mem_free_bytes = integer_field(j, "mem_free_bytes", 0, std::numeric_limits<int64_t>::max());
    p.measured_at = j.at("measured_at").get<std::string>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("hardware profile: ") + e.what());
  }
}

std::string worker_name(const HardwareProfile& p) { return p.host + "/threads=" + std::to_string(p.threads); }

}  // namespace eesched::data
