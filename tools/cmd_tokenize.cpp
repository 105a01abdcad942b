// eesched tokenize: text -> ids (or ids -> text) with a model's tokenizer, as Hugging Face does.
#include <iostream>
#include <stdexcept>
#include <nlohmann/json.hpp>

#include "runtime/chat_template.h"
#include "runtime/tokenizer.h"
#include "runtime/tokenizer_json.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace eesched::tools {
namespace {

struct TokenizeArgs {
  std::string tokenizer, text, ids, chat, chat_template;
  bool json = false, no_special = false, keep_special = false, add_generation_prompt = false;
};

void run(const TokenizeArgs& a) {
  const auto tok = runtime::Tokenizer::load(a.tokenizer);
  if (!a.chat.empty()) {
    if (!tok.hf()) throw std::runtime_error("--chat needs a tokenizer.json with its tokenizer_config.json (chat template)");
    const auto tmpl = runtime::ChatTemplate::from_config(tok.hf()->config_json(), a.chat_template);
    const auto text = tmpl.render(runtime::parse_chat_messages(read_text_file(a.chat)), a.add_generation_prompt);
    // The template writes BOS itself where the family has one; the post-processor must not add another.
    const auto ids = tok.encode(text, false);
    std::cout << nlohmann::json{{"text", text}, {"ids", ids}}.dump() << "\n";
    return;
  }
  if (!a.ids.empty()) {
    const auto text = tok.decode(parse_id_list(a.ids), !a.keep_special);
    if (a.json) std::cout << nlohmann::json{{"text", text}}.dump() << "\n";
    else std::cout << text << "\n";
    return;
  }
  const auto ids = tok.encode(a.text, !a.no_special);
  if (a.json) {
    std::cout << nlohmann::json{{"ids", ids}}.dump() << "\n";
    return;
  }
  for (std::size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
  std::cout << "\n";
}

}  // namespace

void register_tokenize(CLI::App& app) {
  auto args = std::make_shared<TokenizeArgs>();
  auto* cmd = app.add_subcommand(
      "tokenize",
      "encode text to token ids (or decode ids) with a model's tokenizer; BOS and special tokens written in the "
      "text follow the tokenizer's own configuration, as Hugging Face does");
  cmd->add_option("--tokenizer", args->tokenizer,
                  "a model directory (tokenizer.json preferred, else tokenizer.model), a tokenizer.json or a tokenizer.model")
      ->required();
  auto* text = cmd->add_option("--text", args->text, "text to encode");
  auto* ids = cmd->add_option("--ids", args->ids, "comma-separated ids to decode instead, e.g. 1,2,3");
  auto* chat = cmd->add_option("--chat", args->chat,
                               "a conversation to render with the tokenizer's chat template and encode: a JSON file "
                               "[{\"role\": ..., \"content\": ...}, ...]; prints {\"text\": ..., \"ids\": [...]}")
;
  text->excludes(ids);
  chat->excludes(text)->excludes(ids);
  cmd->add_flag("--add-generation-prompt", args->add_generation_prompt, "with --chat: end with the assistant's turn header");
  cmd->add_option("--chat-template", args->chat_template,
                  "with --chat: the family instead of detecting it from the template (llama3, chatml, llama2, mistral)");
  cmd->add_flag("--json", args->json, "print {\"ids\": [...]} (decoding: {\"text\": ...})");
  cmd->add_flag("--no-special", args->no_special, "encode without the post-processor's special tokens (no BOS)");
  cmd->add_flag("--keep-special", args->keep_special, "decode special tokens as text instead of skipping them");
  cmd->callback([args, text, ids, chat] {
    if (text->count() == 0 && ids->count() == 0 && chat->count() == 0)
      throw std::runtime_error("tokenize: give --text TEXT, --ids 1,2,3 or --chat FILE.json");
    run(*args);
  });
}

}  // namespace eesched::tools
