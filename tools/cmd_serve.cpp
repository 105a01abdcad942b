// eesched serve: the OpenAI-compatible gateway (gateway/gateway.h). It holds the key; the
// coordinator and the workers behind it see only encrypted ids.
#include <pthread.h>
#include <signal.h>

#include <thread>

#include <spdlog/spdlog.h>

#include "gateway/gateway.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace eesched::tools {
namespace {

struct ServeArgs {
  std::string coordinator = "127.0.0.1:7700", key, listen = "127.0.0.1:8080", api_key_file, chat_template;
  std::vector<std::string> models;
  double timeout_s = 600;
  int64_t default_max_tokens = 256;
  int http_threads = 64;
};

gateway::ServedModel parse_model(const std::string& spec, const std::string& chat_template) {
  const auto eq = spec.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size())
    throw std::runtime_error("serve: --model takes NAME=TOKENIZER_DIR, got '" + spec + "'");
  return {spec.substr(0, eq), spec.substr(eq + 1), chat_template};
}

void run(const ServeArgs& a) {
  gateway::GatewayOptions o;
  o.coordinator = net::parse_endpoint(a.coordinator);
  o.key = a.key;
  for (const auto& m : a.models) o.models.push_back(parse_model(m, a.chat_template));
  const auto listen = net::parse_endpoint(a.listen);
  o.host = listen.host;
  o.port = listen.port;
  if (!a.api_key_file.empty()) o.api_key = read_api_key_file(a.api_key_file);
  o.timeout = std::chrono::milliseconds(static_cast<int64_t>(a.timeout_s * 1000));
  o.default_max_tokens = a.default_max_tokens;
  o.http_threads = a.http_threads;

  // SIGINT/SIGTERM go to one thread that stops the server (the HTTP threads inherit the mask).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  gateway::Gateway g(std::move(o));
  const int port = g.bind();
  std::string names;
  for (const auto& m : a.models) names += (names.empty() ? "" : ", ") + m.substr(0, m.find('='));
  // The line scripts wait for (the port matters when --listen asked for port 0).
  spdlog::info("serving {} on http://{}:{} (OpenAI API under /v1), coordinator {}", names, listen.host, port, a.coordinator);
  std::thread waiter([&g, signals] {
    int sig = 0;
    sigwait(&signals, &sig);
    spdlog::info("signal {}: stopping", sig);
    g.stop();
  });
  g.serve();
  // serve() also returns when listening fails; wake the waiter either way.
  pthread_kill(waiter.native_handle(), SIGTERM);
  waiter.join();
}

}  // namespace

void register_serve(CLI::App& app) {
  auto a = std::make_shared<ServeArgs>();
  auto* cmd = app.add_subcommand("serve", "an OpenAI-compatible HTTP gateway in front of a coordinator; holds the key (docs/gateway.md)");
  cmd->add_option("--coordinator", a->coordinator, "coordinator HOST:PORT")->capture_default_str();
  add_key_option(cmd, a->key, "the client's EE key (never sent)");
  cmd->add_option("--model", a->models, "NAME=TOKENIZER_DIR: a model the workers hold (encrypted) as NAME, and its plaintext tokenizer; repeatable")
      ->required();
  cmd->add_option("--listen", a->listen, "HOST:PORT to serve HTTP on (port 0: any free port)")->capture_default_str();
  cmd->add_option("--api-key-file", a->api_key_file, "require 'Authorization: Bearer <the file's first line>' on every /v1 request")
      ->check(CLI::ExistingFile);
  cmd->add_option("--chat-template", a->chat_template, "the chat template family for every model instead of detecting it (llama3, chatml, llama2, mistral, plain)");
  cmd->add_option("--timeout-s", a->timeout_s, "give up on a request after this long (504)")->capture_default_str()->check(CLI::Range(0.1, 86400.0));
  cmd->add_option("--default-max-tokens", a->default_max_tokens, "max_tokens of a request that names none")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_option("--http-threads", a->http_threads, "HTTP worker threads: requests answered at once (a stream holds one)")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  cmd->callback([a] { run(*a); });
}

}  // namespace eesched::tools
