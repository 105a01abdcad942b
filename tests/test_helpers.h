#pragma once
// Shared fixtures for the runtime and CLI tests: temp dirs, tiny models, running the binary.
#include <ATen/ATen.h>

#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <functional>
#include <random>
#include <string>
#include <csignal>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include "data/generation.h"
#include "runtime/config.h"
#include "runtime/error.h"
#include "runtime/model.h"
#include "runtime/synthetic.h"
#include "tests/expect_error.h"
#include "tests/tokenizers_dir.h"

namespace eesched::testing {

// `g` with its sampling set (temperature, top-k, top-p, seed); its limits are kept.
inline data::GenerationParams with_sampling(data::GenerationParams g, double temperature, int64_t top_k, double top_p, uint64_t seed) {
  g.temperature = temperature;
  g.top_k = top_k;
  g.top_p = top_p;
  g.seed = seed;
  return g;
}
inline data::GenerationParams sampling(double temperature, int64_t top_k, double top_p, uint64_t seed) {
  return with_sampling({}, temperature, top_k, top_p, seed);
}

// Runs fn, expects a runtime::Error and returns its message; any other outcome fails the test.
inline std::string error_of(const std::function<void()>& fn) { return error_of_type<runtime::Error>(fn); }

// A fresh directory removed when the object goes out of scope.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() / ("eesched-test-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// A tiny GQA model; vocab 1024 matches the committed tokenizer (models/target/tokenizer.model).
inline runtime::LlamaConfig tiny_config(int64_t vocab = 1024) {
  runtime::LlamaConfig c;
  c.vocab_size = vocab;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 128;
  c.tie_word_embeddings = true;
  return c;
}

// Random weights are too flat for sampling tests: scale the head so logits have real spread.
inline runtime::LlamaModel tiny_model(uint64_t seed = 7, int64_t vocab = 1024) {
  auto m = runtime::random_model(tiny_config(vocab), seed);
  auto w = m.weights();
  w.embed_tokens = w.embed_tokens * 20.0;
  return runtime::LlamaModel(m.config(), w);
}

// Every tensor of `w` (norms and biases too, as in a real checkpoint) converted to `dtype`, each
// a fresh copy (never a view of the source model's storage).
inline runtime::LlamaWeights weights_in(runtime::LlamaWeights w, at::ScalarType dtype) {
  auto to = [&](at::Tensor& t) {
    if (t.defined()) t = t.to(dtype, /*non_blocking=*/false, /*copy=*/true).contiguous();
  };
  to(w.embed_tokens), to(w.norm), to(w.lm_head);
  for (auto& l : w.layers)
    for (at::Tensor* t : {&l.input_layernorm, &l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.post_attention_layernorm,
                          &l.gate_proj, &l.up_proj, &l.down_proj, &l.q_bias, &l.k_bias, &l.v_bias, &l.q_norm, &l.k_norm})
      to(*t);
  return w;
}

inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline std::filesystem::path source_dir() { return EESCHED_SOURCE_DIR; }
inline std::filesystem::path tokenizer_path() { return source_dir() / "models" / "target" / "tokenizer.model"; }

struct RunResult {
  int exit_code = -1;
  std::string output;  // stdout only, or stdout+stderr when merged
};

// Runs the eesched binary with a shell-quoted argument string.
inline RunResult run_eesched(const std::string& args, bool merge_stderr = false) {
  const std::string cmd = std::string(EESCHED_BINARY) + " " + args + (merge_stderr ? " 2>&1" : " 2>/dev/null");
  RunResult r;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return r;
  std::array<char, 4096> buf{};
  std::size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) r.output.append(buf.data(), n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

// The eesched binary as a child process (daemons, sweeps), killed and reaped when it goes out
// of scope. stdout and stderr go to `log` (or /dev/null).
class ChildProcess {
 public:
  ChildProcess(const std::vector<std::string>& args, const std::filesystem::path& log = "/dev/null") {
    pid_ = fork();
    if (pid_ == 0) {
      std::vector<char*> argv;
      const std::string binary = EESCHED_BINARY;
      argv.push_back(const_cast<char*>(binary.c_str()));
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      if (!std::freopen(log.c_str(), "a", stdout) || !std::freopen(log.c_str(), "a", stderr)) _exit(126);
      execv(argv[0], argv.data());
      _exit(127);
    }
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess() {
    if (pid_ > 0 && !reaped_) {
      kill(pid_, SIGKILL);
      wait();
    }
  }
  pid_t pid() const { return pid_; }
  void signal(int sig) const { kill(pid_, sig); }
  // The exit status as the shell reports it (128 + signal when killed).
  int wait() {
    if (reaped_) return status_;
    int status = 0;
    waitpid(pid_, &status, 0);
    reaped_ = true;
    status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return status_;
  }
  bool running() {
    if (reaped_) return false;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == 0) return true;
    reaped_ = true;
    status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return false;
  }

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = -1;
};

}  // namespace eesched::testing
