// eesched: one binary, one subcommand per job. Results go to stdout, logs to stderr.
#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <exception>

#include "runtime/threads.h"
#include "tools/commands.h"

int main(int argc, char** argv) {
  eesched::runtime::tune_allocator();
  // Logs to stderr so that stdout carries only results (text, JSON).
  spdlog::set_default_logger(spdlog::stderr_color_mt("eesched"));
  spdlog::set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");

  CLI::App app{"eesched: private LLM inference with Equivariant Encryption and a learned scheduler"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "help for every subcommand");
  std::string level = "info";
  app.add_option("--log-level", level, "trace, debug, info, warn, error, off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}))
      ->capture_default_str();
  app.parse_complete_callback([&] { spdlog::set_level(spdlog::level::from_str(level)); });

  eesched::tools::register_train_lm(app);
  eesched::tools::register_keygen(app);
  eesched::tools::register_rotate_key(app);
  eesched::tools::register_attack(app);
  eesched::tools::register_encrypt_model(app);
  eesched::tools::register_measure_quality(app);
  eesched::tools::register_generate(app);
  eesched::tools::register_logits(app);
  eesched::tools::register_perplexity(app);
  eesched::tools::register_make_synthetic(app);
  eesched::tools::register_bench_decode(app);
  eesched::tools::register_bench_ee(app);
  eesched::tools::register_bench_arms(app);
  eesched::tools::register_make_suite(app);
  eesched::tools::register_bench(app);
  eesched::tools::register_db(app);
  eesched::tools::register_train_selector(app);
  eesched::tools::register_replay(app);
  eesched::tools::register_bench_selector(app);
  eesched::tools::register_make_token(app);
  eesched::tools::register_coordinator(app);
  eesched::tools::register_worker(app);
  eesched::tools::register_submit(app);
  eesched::tools::register_serve(app);
  eesched::tools::register_bench_serve(app);
  eesched::tools::register_bench_dispatch(app);
  eesched::tools::register_tokenize(app);

  // CLI11 reports an unknown subcommand as "a subcommand is required"; name it instead.
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--log-level") { ++i; continue; }
    if (arg.empty() || arg[0] == '-') continue;
    const auto subs = app.get_subcommands([&](const CLI::App* sub) { return sub->check_name(arg); });
    if (subs.empty()) {
      std::fprintf(stderr, "eesched: error: unknown subcommand '%s' (see eesched --help)\n", arg.c_str());
      return 2;
    }
    break;
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "eesched: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
