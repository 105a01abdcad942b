#pragma once
// Each subcommand lives in its own cmd_*.cpp and registers itself on the top-level app.
#include <CLI/CLI.hpp>

namespace eesched::tools {

void register_generate(CLI::App& app);
void register_logits(CLI::App& app);
void register_perplexity(CLI::App& app);
void register_train_lm(CLI::App& app);
void register_make_synthetic(CLI::App& app);
void register_bench_decode(CLI::App& app);
void register_keygen(CLI::App& app);
void register_rotate_key(CLI::App& app);
void register_attack(CLI::App& app);
void register_attack_frontier(CLI::App* attack);  // `attack frontier`, on the `attack` command
void register_attack_ciphertext(CLI::App* attack);  // under `attack` (tools/cmd_attack_ciphertext.cpp)
void register_encrypt_model(CLI::App& app);
void register_measure_quality(CLI::App& app);
void register_bench_ee(CLI::App& app);
void register_bench_arms(CLI::App& app);
void register_make_suite(CLI::App& app);
void register_bench(CLI::App& app);
void register_db(CLI::App& app);
void register_train_selector(CLI::App& app);
void register_replay(CLI::App& app);
void register_bench_selector(CLI::App& app);
void register_make_token(CLI::App& app);
void register_coordinator(CLI::App& app);
void register_worker(CLI::App& app);
void register_submit(CLI::App& app);
void register_serve(CLI::App& app);
void register_bench_serve(CLI::App& app);
void register_bench_dispatch(CLI::App& app);
void register_tokenize(CLI::App& app);

}  // namespace eesched::tools
