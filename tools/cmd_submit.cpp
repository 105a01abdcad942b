// eesched submit: the client. Tokenizes and encrypts on this machine (the key never leaves it),
// submits to the coordinator, waits, decrypts and detokenizes the answer.
#include <iostream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "data/task.h"
#include "ee/codec.h"
#include "ee/key.h"
#include "net/task_client.h"
#include "runtime/tokenizer.h"
#include "tools/cli_util.h"
#include "tools/chat_prompt.h"
#include "tools/commands.h"

namespace eesched::tools {
namespace {

struct SubmitArgs {
  std::string coordinator = "127.0.0.1:7700", key, tokenizer, model, prompt, quality = "exact", arm, request_id;
  data::GenerationParams generation;  // sent as given (its stop ids: the encrypted EOS)
  double timeout_s = 600, max_ppl_ratio = data::kDefaultMaxPplRatio;
  ChatOptions chat;
  bool json = false, ignore_eos = false, stream = false;
};

void run(const SubmitArgs& a) {
  const auto key = ee::Key::load(a.key);
  const ee::Codec codec(key);
  const auto tokenizer = runtime::Tokenizer::load(a.tokenizer);
  // The key permutes the model's whole embedding, which real checkpoints pad past the tokenizer.
  if (tokenizer.vocab_size() > codec.vocab_size())
    throw std::runtime_error("tokenizer has " + std::to_string(tokenizer.vocab_size()) + " tokens, more than the key's vocabulary of " +
                             std::to_string(codec.vocab_size()) + ": not the tokenizer this key was made for");
  std::vector<int64_t> prompt, stops;
  if (!a.ignore_eos) stops.push_back(tokenizer.eos_id());
  if (!a.chat.chat.empty()) {
    auto chat = chat_prompt(tokenizer, a.chat);
    prompt = std::move(chat.ids);
    if (!a.ignore_eos) stops.insert(stops.end(), chat.stop_ids.begin(), chat.stop_ids.end());
  } else {
    prompt = tokenizer.encode(a.prompt);
  }

  net::TaskRequest r;
  r.request_id = a.request_id;
  r.model = a.model;
  r.key_fingerprint = key.fingerprint();
  r.prompt_ids = {codec.encrypt(prompt)};  // all the coordinator and worker ever see
  r.generation = a.generation;
  r.generation.stop_ids = codec.encrypt(stops);
  r.quality = data::parse_quality(a.quality);
  r.max_ppl_ratio = a.max_ppl_ratio;
  r.arm = a.arm;

  net::SubmitOptions o;
  o.timeout = std::chrono::milliseconds(static_cast<int64_t>(a.timeout_s * 1000));
  o.on_accepted = [](const net::Accepted& acc) { spdlog::info("accepted as task {} ({})", acc.task_id, acc.request_id); };
  // --stream: the text as the worker produces it, decrypted here. A retried attempt continues
  // after what was streamed; only a task restarted by a coordinator restart starts again at
  // offset 0 (docs/protocol.md), and its text is shown only where it goes past what is already on
  // the screen.
  std::vector<int64_t> streamed;  // the answer's ids since offset 0 was last seen, decrypted, in order
  std::string shown;
  if (a.stream && !a.json)
    o.on_tokens = [&](const net::Tokens& t) {
      if (t.offsets.front() == 0) streamed.clear();
      const auto ids = codec.decrypt(t.tokens.front());
      for (std::size_t i = 0; i < ids.size(); ++i)
        if (t.offsets.front() + static_cast<int64_t>(i) == static_cast<int64_t>(streamed.size())) streamed.push_back(ids[i]);
      const auto text = tokenizer.decode(streamed);
      if (text.size() > shown.size() && text.compare(0, shown.size(), shown) == 0) {
        std::cout << text.substr(shown.size()) << std::flush;
        shown = text;
      }
    };
  const auto res = net::submit_and_wait(net::parse_endpoint(a.coordinator), r, o);
  if (res.status != "done" || !res.report.ok) {
    if (!shown.empty()) std::cout << std::endl;
    throw std::runtime_error("task " + std::to_string(res.task_id) + " " + res.status + ": " + res.report.error);
  }
  if (res.report.tokens.size() != 1) throw std::runtime_error("the result holds " + std::to_string(res.report.tokens.size()) + " rows, expected 1");
  const auto ids = codec.decrypt(res.report.tokens.front());
  const auto text = tokenizer.decode(ids);
  if (!a.json) {
    // Streamed: the rest of the answer; all of it again, on a line of its own, if a retry
    // changed what was shown.
    if (!shown.empty() && text.compare(0, shown.size(), shown) == 0) std::cout << text.substr(shown.size()) << "\n";
    else std::cout << (shown.empty() ? "" : "\n") << text << "\n";
    spdlog::info("task {}: worker {}, arm {}{}{}, {} tokens in {:.1f} ms (predicted {:.1f} ms), {} attempt(s)", res.task_id, res.worker,
                 res.arm, res.ppl_ratio ? fmt::format(" (measured perplexity ratio {:.3f})", *res.ppl_ratio) : "",
                 res.explored ? " (explored)" : "", ids.size(), res.report.latency_ms, res.predicted_ms, res.attempts);
    return;
  }
  nlohmann::json j{{"task_id", res.task_id},       {"request_id", res.request_id}, {"status", res.status},
                   {"text", text},                  {"ids", ids},                   {"prompt_ids", prompt},
                   {"worker", res.worker},          {"arm", res.arm},               {"explored", res.explored},
                   {"latency_ms", res.report.latency_ms}, {"ttft_ms", res.report.ttft_ms},
                   {"tokens_per_s", res.report.tokens_per_s}, {"predicted_ms", res.predicted_ms},
                   {"attempts", res.attempts}};
  if (res.report.acceptance_rate) j["acceptance_rate"] = *res.report.acceptance_rate;
  if (res.ppl_ratio) j["ppl_ratio"] = *res.ppl_ratio;
  std::cout << j.dump() << "\n";
}

}  // namespace

void register_submit(CLI::App& app) {
  auto a = std::make_shared<SubmitArgs>();
  auto* cmd = app.add_subcommand("submit", "encrypt a prompt, run it through the coordinator, decrypt and print the answer");
  cmd->add_option("--coordinator", a->coordinator, "coordinator HOST:PORT")->capture_default_str();
  add_key_option(cmd, a->key, "the client's EE key (never sent)");
  cmd->add_option("--tokenizer", a->tokenizer, "the plaintext model's tokenizer: tokenizer.json, tokenizer.model or its directory")
      ->required()
      ->check(CLI::ExistingPath);
  cmd->add_option("--model", a->model, "model name, as the workers registered it")->required();
  auto* prompt = cmd->add_option("--prompt", a->prompt, "prompt text (or --chat)");
  add_chat_options(cmd, a->chat);
  cmd->add_option("--max-new-tokens", a->generation.max_new_tokens, "tokens to generate at most")->capture_default_str()->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--quality", a->quality, "exact: lossless arms only; tolerant: int8 and pruning allowed")
      ->capture_default_str()->check(CLI::IsMember({"exact", "tolerant"}));
  cmd->add_option("--max-ppl-ratio", a->max_ppl_ratio,
                  "tolerant: admit a lossy arm only if its measured perplexity ratio (vs the lossless model) is at most this")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 1000.0));
  cmd->add_option("--temperature", a->generation.temperature, "0: greedy")->capture_default_str()->check(CLI::Range(0.0, 100.0));
  cmd->add_option("--top-k", a->generation.top_k, "keep the k most likely tokens (0 = off)")->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-p", a->generation.top_p, "nucleus sampling mass")->capture_default_str()->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--seed", a->generation.seed, "sampling seed")->capture_default_str();
  cmd->add_option("--arm", a->arm, "run this arm instead of the selector's choice");
  cmd->add_option("--request-id", a->request_id, "idempotency key: resubmitting it returns the same task's result");
  cmd->add_option("--timeout-s", a->timeout_s, "give up after this long")->capture_default_str()->check(CLI::Range(0.1, 86400.0));
  cmd->add_flag("--ignore-eos", a->ignore_eos, "do not stop at the tokenizer's EOS");
  cmd->add_flag("--json", a->json, "print {text, ids, worker, arm, latency_ms, attempts, ...}");
  cmd->add_flag("--stream", a->stream, "print the answer as the worker produces it (text output; ignored with --json)");
  cmd->callback([a, prompt] {
    if ((prompt->count() > 0) == !a->chat.chat.empty()) throw std::runtime_error("submit: give --prompt TEXT or --chat TEXT (one of them)");
    run(*a);
  });
}

}  // namespace eesched::tools
