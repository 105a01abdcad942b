// runtime/tokenizer_json against the reference: tests/data/tokenizers/<name>.json were written by
// @lenml/tokenizers (a port of Hugging Face's tokenizers; tests/data/tokenizers/generate.sh) from
// the real tokenizer files that tools/fetch-tokenizers.sh fetches. Encode and decode must match
// exactly. Without the fetched files (no network, no npm) the tests skip, loudly.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "runtime/chat_template.h"
#include "runtime/error.h"
#include "runtime/tokenizer_json.h"
#include "tests/tokenizers_dir.h"

namespace fs = std::filesystem;
using eesched::runtime::HfTokenizer;
using eesched::testing::tokenizers_dir;

namespace {

nlohmann::json golden(const std::string& name) {
  std::ifstream in(fs::path(EESCHED_SOURCE_DIR) / "tests/data/tokenizers" / (name + ".json"));
  return nlohmann::json::parse(in);
}

std::string show(const std::vector<int64_t>& ids) {
  std::string s = "[";
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(ids[i]);  // not `(i ? "," : "") + ...`: GCC 12's -Wrestrict false positive
  }
  return s + "]";
}

class RealTokenizer : public ::testing::TestWithParam<std::string> {};

TEST_P(RealTokenizer, MatchesTheReference) {
  const auto file = tokenizers_dir() / GetParam() / "tokenizer.json";
  if (!fs::exists(file)) {
    std::cerr << "\n*** " << file << " IS MISSING: the real-tokenizer tests did NOT run. "
              << "Run `bash tools/fetch-tokenizers.sh` (make test does). ***\n\n";
    GTEST_SKIP() << file << " missing (tools/fetch-tokenizers.sh)";
  }
  const auto tok = HfTokenizer::load(file);
  const auto g = golden(GetParam());
  int failures = 0, checked = 0;
  for (const auto& c : g.at("cases")) {
    const auto text = c.at("text").get<std::string>();
    const auto want = c.at("ids").get<std::vector<int64_t>>();
    const auto want_plain = c.at("ids_no_special").get<std::vector<int64_t>>();
    const auto got = tok.encode(text, true);
    const auto got_plain = tok.encode(text, false);
    ++checked;
    if (got != want || got_plain != want_plain) {
      if (++failures <= 10)
        ADD_FAILURE() << "encode " << nlohmann::json(text).dump() << "\n  want " << show(want) << "\n  got  " << show(got)
                      << "\n  (no special) want " << show(want_plain) << " got " << show(got_plain);
      continue;
    }
    if (!c.contains("decoded")) continue;
    const auto dec = tok.decode(want, false);
    const auto dec_skip = tok.decode(want, true);
    if (dec != c.at("decoded").get<std::string>() || dec_skip != c.at("decoded_skip_special").get<std::string>()) {
      if (++failures <= 10)
        ADD_FAILURE() << "decode " << show(want) << " of " << nlohmann::json(text).dump() << "\n  want "
                      << c.at("decoded").dump() << " / " << c.at("decoded_skip_special").dump() << "\n  got  "
                      << nlohmann::json(dec).dump() << " / " << nlohmann::json(dec_skip).dump();
    }
  }
  EXPECT_EQ(failures, 0) << "of " << checked << " cases";
  EXPECT_GT(checked, 300);
}

INSTANTIATE_TEST_SUITE_P(Golden, RealTokenizer,
                         ::testing::Values("llama3", "llama3_1", "qwen3", "qwen2_5", "llama2", "mistral_nemo"));

TEST(RealTokenizerConfig, BosEosAndVocabularyFromTheFiles) {
  const auto dir = tokenizers_dir();
  if (!fs::exists(dir / "qwen3/tokenizer.json") || !fs::exists(dir / "llama2/tokenizer.json") ||
      !fs::exists(dir / "llama3_1/tokenizer.json") || !fs::exists(dir / "qwen2_5/tokenizer.json") ||
      !fs::exists(dir / "mistral_nemo/tokenizer.json"))
    GTEST_SKIP() << "tokenizers missing (tools/fetch-tokenizers.sh)";
  const auto llama3 = HfTokenizer::load(dir / "llama3_1/tokenizer.json");
  EXPECT_EQ(llama3.bos_id(), 128000);
  EXPECT_EQ(llama3.eos_id(), 128009);  // <|eot_id|> in the 3.1 config
  EXPECT_EQ(llama3.vocab_size(), 128256);
  const auto qwen = HfTokenizer::load(dir / "qwen3/tokenizer.json");
  EXPECT_EQ(qwen.bos_id(), -1);
  EXPECT_EQ(qwen.eos_id(), *qwen.token_to_id("<|im_end|>"));
  EXPECT_EQ(qwen.vocab_size(), 151669);
  const auto llama2 = HfTokenizer::load(dir / "llama2/tokenizer.json");
  EXPECT_EQ(llama2.bos_id(), 1);
  EXPECT_EQ(llama2.eos_id(), 2);
  EXPECT_EQ(llama2.vocab_size(), 32000);
  const auto qwen25 = HfTokenizer::load(dir / "qwen2_5/tokenizer.json");
  EXPECT_EQ(qwen25.bos_id(), -1);
  EXPECT_EQ(qwen25.eos_id(), 151645);  // <|im_end|>
  EXPECT_EQ(qwen25.vocab_size(), 151665);
  const auto nemo = HfTokenizer::load(dir / "mistral_nemo/tokenizer.json");
  EXPECT_EQ(nemo.bos_id(), 1);
  EXPECT_EQ(nemo.eos_id(), 2);
  EXPECT_EQ(nemo.vocab_size(), 131072);
}

// Runs without the fetched files: a tiny byte-level BPE written here.
TEST(HfTokenizerFormat, TinyByteLevelBpeAndRefusals) {
  const auto dir = fs::temp_directory_path() / ("eesched_tokjson_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  nlohmann::json j = {
      {"added_tokens", {{{"id", 5}, {"content", "<eos>"}, {"special", true}}}},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}, {"ab", 2}, {"\u0120", 3}, {"\u0120ab", 4}}},
                 {"merges", {"a b", "\u0120 ab"}}}}};
  std::ofstream(dir / "tokenizer.json") << j.dump();
  const auto tok = HfTokenizer::load(dir / "tokenizer.json");
  EXPECT_EQ(tok.encode("ab ab<eos>"), (std::vector<int64_t>{2, 4, 5}));
  EXPECT_EQ(tok.decode({2, 4, 5}), "ab ab<eos>");
  EXPECT_EQ(tok.decode({2, 4, 5}, true), "ab ab");
  EXPECT_EQ(tok.vocab_size(), 6);
  j["model"]["type"] = "WordPiece";
  std::ofstream(dir / "tokenizer.json") << j.dump();
  try {
    HfTokenizer::load(dir / "tokenizer.json");
    ADD_FAILURE() << "WordPiece accepted";
  } catch (const eesched::runtime::Error& e) {
    EXPECT_NE(std::string(e.what()).find("WordPiece is not supported"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

}  // namespace

// runtime/chat_template against jinja2 (tests/data/chat_templates/generate.py): the rendered prompt
// of every conversation, with and without add_generation_prompt, must be identical.
namespace {

using eesched::runtime::ChatTemplate;

class RealChatTemplate : public ::testing::TestWithParam<std::string> {};

TEST_P(RealChatTemplate, MatchesJinja) {
  const auto config = tokenizers_dir() / GetParam() / "tokenizer_config.json";
  if (!fs::exists(config)) {
    std::cerr << "\n*** " << config << " IS MISSING: the chat-template tests did NOT run. "
              << "Run `bash tools/fetch-tokenizers.sh` (make test does). ***\n\n";
    GTEST_SKIP() << config << " missing (tools/fetch-tokenizers.sh)";
  }
  std::ifstream in(config);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::ifstream gin(fs::path(EESCHED_SOURCE_DIR) / "tests/data/chat_templates" / (GetParam() + ".json"));
  const auto g = nlohmann::json::parse(gin);
  // The Llama 2 config has no template: the golden carries the one it was rendered from (Hugging
  // Face's default Llama 2 template, read from @xenova/transformers by generate.py), and the family
  // is detected from that text like any other.
  auto config_json = nlohmann::json::parse(text);
  if (g.contains("template")) {
    ASSERT_FALSE(config_json.contains("chat_template")) << "the config has a template of its own";
    config_json["chat_template"] = g.at("template");
  }
  const auto tmpl = ChatTemplate::from_config(config_json.dump());
  const std::map<std::string, eesched::runtime::ChatFamily> family = {
      {"llama3", eesched::runtime::ChatFamily::Llama3},   {"llama3_1", eesched::runtime::ChatFamily::Llama3},
      {"qwen3", eesched::runtime::ChatFamily::ChatML},    {"qwen2_5", eesched::runtime::ChatFamily::ChatML},
      {"llama2", eesched::runtime::ChatFamily::Llama2},   {"mistral_nemo", eesched::runtime::ChatFamily::Mistral}};
  EXPECT_EQ(tmpl.family(), family.at(GetParam()));
  // The end-of-turn (stop) token is in the vocabulary.
  const auto tok = HfTokenizer::load(tokenizers_dir() / GetParam() / "tokenizer.json");
  EXPECT_TRUE(tok.token_to_id(tmpl.end_of_turn()).has_value()) << tmpl.end_of_turn();
  int checked = 0;
  for (const auto& c : g.at("cases")) {
    const auto messages = eesched::runtime::parse_chat_messages(c.at("messages").dump());
    const bool gen = c.at("add_generation_prompt").get<bool>();
    ++checked;
    if (c.contains("error")) {
      EXPECT_THROW(tmpl.render(messages, gen), eesched::runtime::Error) << c.at("messages").dump();
      continue;
    }
    EXPECT_EQ(tmpl.render(messages, gen), c.at("text").get<std::string>()) << c.at("messages").dump() << " gen " << gen;
  }
  EXPECT_GE(checked, 20);
}

INSTANTIATE_TEST_SUITE_P(Golden, RealChatTemplate,
                         ::testing::Values("llama3", "llama3_1", "qwen3", "qwen2_5", "llama2", "mistral_nemo"));

// What each real template's text makes of the family's options: Qwen2.5's default system turn
// (Qwen3 has none; Qwen3's <think> handling, which Qwen2.5's lacks, the goldens check), the
// config's BOS/EOS and stop tokens.
TEST(RealChatTemplate, OptionsFromTheTemplateText) {
  const auto dir = tokenizers_dir();
  for (const char* name : {"qwen2_5", "qwen3", "mistral_nemo"})
    if (!fs::exists(dir / name / "tokenizer_config.json")) GTEST_SKIP() << name << " missing (tools/fetch-tokenizers.sh)";
  auto config = [&](const char* name) {
    std::ifstream in(dir / name / "tokenizer_config.json");
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  const auto qwen25 = ChatTemplate::from_config(config("qwen2_5"));
  EXPECT_EQ(qwen25.default_system(), "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
  EXPECT_EQ(qwen25.end_of_turn(), "<|im_end|>");
  EXPECT_EQ(ChatTemplate::from_config(config("qwen3")).default_system(), "");
  // Named instead of detected: the template's text still decides the default system turn.
  EXPECT_EQ(ChatTemplate::from_config(config("qwen2_5"), "qwen").default_system(), qwen25.default_system());
  const auto mistral = ChatTemplate::from_config(config("mistral_nemo"));
  EXPECT_EQ(mistral.render({{"system", "S"}, {"user", "U"}}, true), "<s>[INST]S\n\nU[/INST]");
  EXPECT_EQ(mistral.end_of_turn(), "</s>");
}

TEST(ChatTemplateDetection, FamiliesAndRefusals) {
  using eesched::runtime::ChatFamily;
  EXPECT_EQ(eesched::runtime::detect_chat_family("{{ '<|im_start|>' }}"), ChatFamily::ChatML);
  EXPECT_EQ(eesched::runtime::detect_chat_family("<|start_header_id|>"), ChatFamily::Llama3);
  EXPECT_EQ(eesched::runtime::detect_chat_family("'<<SYS>>\\n' '[INST] ' x ' [/INST]'"), ChatFamily::Llama2);
  EXPECT_EQ(eesched::runtime::detect_chat_family(R"({{- "[INST]" + system_message + "[/INST]" }})"), ChatFamily::Mistral);
  // Other [INST] forms (spaced, single-quoted, v7's [SYSTEM_PROMPT]): not supported, not Llama 2 either.
  EXPECT_FALSE(eesched::runtime::detect_chat_family("{{ '[INST] ' + message['content'] + ' [/INST]' }}").has_value());
  EXPECT_FALSE(eesched::runtime::detect_chat_family("{{ '[INST]' + message['content'] + '[/INST]' }}").has_value());
  EXPECT_FALSE(eesched::runtime::detect_chat_family(R"({{ "[SYSTEM_PROMPT]" }}{{ "[INST]" + m + "[/INST]" }})").has_value());
  EXPECT_FALSE(eesched::runtime::detect_chat_family("{{ messages }}").has_value());
  for (const char* t : {R"({"chat_template": "{{ messages }}"})", R"({"chat_template": "{{ '[INST] ' + m + ' [/INST]' }}"})"}) {
    try {
      ChatTemplate::from_config(t);
      ADD_FAILURE() << "unknown template accepted: " << t;
    } catch (const eesched::runtime::Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("llama3, chatml (Qwen), llama2, mistral"), std::string::npos) << what;
      EXPECT_EQ(what.find('\n'), std::string::npos) << what;
    }
  }
  EXPECT_EQ(eesched::runtime::chat_family_from_name("mistral"), ChatFamily::Mistral);
  EXPECT_THROW(ChatTemplate::from_config("{}"), eesched::runtime::Error);
  EXPECT_THROW(eesched::runtime::chat_family_from_name("vicuna"), eesched::runtime::Error);
  EXPECT_THROW(eesched::runtime::parse_chat_messages(R"([{"role": "user"}])"), eesched::runtime::Error);
}

}  // namespace
