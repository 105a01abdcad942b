// The command-line contract: subcommands, flags, JSON fields, one-line errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "ee/codec.h"
#include "ee/key.h"
#include "ee/manifest.h"
#include "runtime/model.h"
#include "runtime/synthetic.h"
#include "tests/ee_fixtures.h"
#include "tests/test_helpers.h"

namespace ee = eesched::ee;
using eesched::testing::run_eesched;
using eesched::testing::TempDir;
using ::testing::HasSubstr;

namespace {

// A tiny model directory with the committed tokenizer, written once for the whole suite.
class Cli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    model_dir_ = dir_->path() / "model";
    eesched::testing::tiny_model().save(model_dir_);
    std::filesystem::copy_file(eesched::testing::tokenizer_path(), model_dir_ / "tokenizer.model");
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string model() { return model_dir_.string(); }

  static inline TempDir* dir_ = nullptr;
  static inline std::filesystem::path model_dir_;
};

int count_lines(const std::string& s);

// The contract for bad input: exit status 1 and one line naming the problem.
void expect_one_line_error(const std::string& cmd, const std::string& needle) {
  auto r = run_eesched(cmd, true);
  EXPECT_EQ(r.exit_code, 1) << cmd;
  EXPECT_THAT(r.output, HasSubstr(needle)) << cmd;
  EXPECT_EQ(count_lines(r.output), 1) << r.output;
}

int count_lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

// The "quality" object of an encrypted directory's ee.json.
nlohmann::json data_quality(const std::string& dir) {
  return nlohmann::json::parse(eesched::testing::read_file(std::filesystem::path(dir) / "ee.json"))["quality"];
}

TEST_F(Cli, EverySubcommandHasHelp) {
  for (const char* sub : {"train-lm", "generate", "logits", "perplexity", "make-synthetic", "bench-decode", "keygen",
                          "encrypt-model", "bench-ee", "bench-arms", "make-suite", "bench", "db", "train-selector", "replay", "bench-selector",
                          "make-token", "coordinator", "worker", "submit", "bench-dispatch", "measure-quality", "tokenize",
                          "attack weights", "attack hidden", "attack frontier", "attack ciphertext", "attack make-requests", "rotate-key", "db purge-ids"}) {
    auto r = run_eesched(std::string(sub) + " --help");
    EXPECT_EQ(r.exit_code, 0) << sub;
    EXPECT_THAT(r.output, HasSubstr("--")) << sub;
  }
  EXPECT_EQ(run_eesched("--help").exit_code, 0);
}

TEST_F(Cli, GenerateJsonHasTheContractFields) {
  auto r = run_eesched("generate --model " + model() + " --prompt 'Fellow citizens' --max-new-tokens 6 --ignore-eos --json --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output);
  for (const char* key : {"text", "ids", "ttft_ms", "ms_per_token", "tokens_per_s"}) EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_EQ(j["ids"].size(), 6u);
  EXPECT_GT(j["tokens_per_s"].get<double>(), 0);
}

TEST_F(Cli, GenerateWithAndWithoutCacheAgree) {
  const std::string base = "generate --model " + model() + " --prompt 'The state of the union' --max-new-tokens 10 --ignore-eos --json";
  auto with = nlohmann::json::parse(run_eesched(base).output);
  auto without = nlohmann::json::parse(run_eesched(base + " --no-kv-cache").output);
  EXPECT_EQ(with["ids"], without["ids"]);
}

TEST_F(Cli, GenerateSeededSamplingIsReproducible) {
  const std::string cmd = "generate --model " + model() +
                          " --prompt 'We the people' --max-new-tokens 12 --ignore-eos --temperature 0.9 --top-k 40 --top-p 0.95 --seed 7 --json";
  EXPECT_EQ(nlohmann::json::parse(run_eesched(cmd).output)["ids"], nlohmann::json::parse(run_eesched(cmd).output)["ids"]);
}

TEST_F(Cli, LogitsJsonIsOneFullRowPerPosition) {
  auto r = run_eesched("logits --model " + model() + " --ids 1,2,3,40 --json");
  ASSERT_EQ(r.exit_code, 0);
  auto j = nlohmann::json::parse(r.output);
  ASSERT_EQ(j["logits"].size(), 4u);
  for (const auto& row : j["logits"]) EXPECT_EQ(row.size(), 1024u);
}

TEST_F(Cli, PerplexityOnAText) {
  std::ofstream(dir_->path() / "text.txt") << "Fellow citizens of the Senate and House of Representatives.\n\nWe meet again.\n";
  auto r = run_eesched("perplexity --model " + model() + " --text " + (dir_->path() / "text.txt").string() + " --json");
  ASSERT_EQ(r.exit_code, 0);
  auto j = nlohmann::json::parse(r.output);
  EXPECT_GT(j["perplexity"].get<double>(), 1.0);
  EXPECT_GT(j["tokens"].get<int>(), 5);
}

TEST_F(Cli, MakeSyntheticWritesALoadableModel) {
  // 25m is the smallest preset; loading it back checks every tensor name and shape.
  TempDir out;
  auto r = run_eesched("make-synthetic --preset 25m --seed 3 --out " + (out / "m").string());
  ASSERT_EQ(r.exit_code, 0);
  auto m = eesched::runtime::LlamaModel::load(out / "m");
  EXPECT_EQ(m.config().num_key_value_heads, 2);
  EXPECT_NEAR(static_cast<double>(m.config().parameter_count()), 25e6, 2e6);
}

TEST_F(Cli, BadInputIsAOneLineErrorAndNonZeroExit) {
  TempDir bad;
  std::filesystem::create_directories(bad / "model");
  std::ofstream(bad / "model" / "config.json") << "{\"hidden_size\": 8}";
  std::ofstream(bad / "model" / "model.safetensors") << "garbage";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"generate --model /nonexistent --prompt hi", "nonexistent"},
      {"generate --model " + model() + " --prompt hi --top-p 2", "top-p"},
      {"generate --model " + (bad / "model").string() + " --prompt hi --tokenizer " + eesched::testing::tokenizer_path().string(),
       "vocab_size"},
      {"logits --model " + model() + " --ids 1,x,3", "not a token id"},
      {"logits --model " + model() + " --ids 1,99999", "outside the vocabulary"},
      {"perplexity --model " + model() + " --text /nonexistent.txt", "nonexistent"},
      {"make-synthetic --preset 7b --out /tmp/x", "7b"},
      {"generate --model " + model(), "prompt"},
      {"no-such-command", "no-such-command"},
      {"db forget --db /nonexistent.db --arms kv+int8", "no store at /nonexistent.db"},
      {"db forget --db /nonexistent.db --model target", "no store at /nonexistent.db"},
      {"db forget --db /nonexistent.db", "say what to forget"},
      {"db purge-ids --db /nonexistent.db --all", "no store at /nonexistent.db"},
      {"db purge-ids --db /nonexistent.db", "--older-than-days N or --all"},
      {"worker --coordinator 127.0.0.1:1 --dry-run --token-file " + eesched::testing::tokenizer_path().string() + " --retain-ids 7d",
       "give none, all, or a whole number of days"},
      {"coordinator --db /tmp/x.db --token-file " + eesched::testing::tokenizer_path().string() + " --retain-ids 0",
       "give none, all, or a whole number of days"},
  };
  for (const auto& [args, needle] : cases) {
    auto r = run_eesched(args, /*merge_stderr=*/true);
    EXPECT_NE(r.exit_code, 0) << args;
    EXPECT_LT(r.exit_code, 128) << "crashed: " << args;
    EXPECT_THAT(r.output, HasSubstr(needle)) << args;
    EXPECT_LE(count_lines(r.output), 2) << args << "\n" << r.output;
  }
}

// The daemons' commands refuse bad input before serving anything.
TEST_F(Cli, DaemonCommandsRefuseBadInputInOneLine) {
  const auto token = (dir_->path() / "worker.token").string();
  std::filesystem::remove(token);
  auto made = run_eesched("make-token --out " + token, true);
  ASSERT_EQ(made.exit_code, 0) << made.output;
  EXPECT_EQ(std::filesystem::status(token).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  expect_one_line_error("make-token --out " + token, "cannot create token file");
  const auto short_token = (dir_->path() / "short.token").string();
  std::ofstream(short_token) << "abc\n";
  expect_one_line_error("coordinator --db " + (dir_->path() / "c.db").string() + " --token-file " + short_token,
                        "at least 16 are needed");
  expect_one_line_error("coordinator --db " + (dir_->path() / "c.db").string() + " --token-file " + token + " --listen nohost",
                        "expected HOST:PORT");
  expect_one_line_error("coordinator --db " + (dir_->path() / "c.db").string() + " --token-file " + token + " --selector " + token,
                        "is not a selector file");
  // A worker serves encrypted models only.
  expect_one_line_error("worker --coordinator 127.0.0.1:1 --model " + model() + " --token-file " + token,
                        "is not encrypted (no ee.json)");
  // Until the coordinator accepts a task, the client fails fast.
  const auto key = (dir_->path() / "submit.eekey").string();
  ASSERT_EQ(run_eesched("--log-level warn keygen --force --model " + model() + " --out " + key).exit_code, 0);
  expect_one_line_error("submit --coordinator 127.0.0.1:1 --key " + key + " --tokenizer " + (model_dir_ / "tokenizer.model").string() +
                            " --model m --prompt hi",
                        "cannot connect to 127.0.0.1:1");
}

TEST_F(Cli, CorruptModelFileNamesTheProblem) {
  TempDir bad;
  std::filesystem::copy(model_dir_, bad / "m");
  const auto st = bad / "m" / "model.safetensors";
  std::filesystem::resize_file(st, std::filesystem::file_size(st) - 100);
  auto r = run_eesched("generate --model " + (bad / "m").string() + " --prompt hi", true);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("model.safetensors"));
  EXPECT_THAT(r.output, HasSubstr("tensor"));
  EXPECT_EQ(count_lines(r.output), 1) << r.output;
}

TEST_F(Cli, EncryptedGenerateDecryptsToThePlaintextText) {
  TempDir d;
  const auto key = (d / "k.eekey").string(), enc = (d / "enc").string();
  ASSERT_EQ(run_eesched("keygen --model " + model() + " --out " + key).exit_code, 0);
  auto again = run_eesched("keygen --model " + model() + " --out " + key, true);
  EXPECT_NE(again.exit_code, 0);
  EXPECT_THAT(again.output, HasSubstr("--force"));
  ASSERT_EQ(run_eesched("encrypt-model --model " + model() + " --key " + key + " --out " + enc).exit_code, 0);

  const std::string args = " --prompt 'Fellow citizens of the' --max-new-tokens 12 --ignore-eos --json";
  auto plain = nlohmann::json::parse(run_eesched("generate --model " + model() + args).output);
  auto secret = nlohmann::json::parse(run_eesched("generate --model " + enc + " --key " + key + " --tokenizer " +
                                                  (model_dir_ / "tokenizer.model").string() + args)
                                          .output);
  EXPECT_EQ(secret["text"], plain["text"]);
  EXPECT_EQ(secret["ids"], plain["ids"]);
  EXPECT_EQ(secret["prompt_ids"], plain["prompt_ids"]);

  // Were these weights public, a worker would read the whole vocabulary back from them.
  const auto text = d / "held-out.txt";
  std::ofstream(text) << "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
                         "must be in want of a wife. The state of the Union is strong, and our economy grows.\n";
  const auto attack = run_eesched("attack weights --encrypted " + enc + " --public " + model() + " --key " + key + " --text " +
                                  text.string() + " --json");
  ASSERT_EQ(attack.exit_code, 0) << attack.output;
  const auto a = nlohmann::json::parse(attack.output);
  EXPECT_EQ(a["vocab_recovered"], 1.0);
  EXPECT_EQ(a["tokens_recovered"], 1.0);
  EXPECT_GT(a["text_tokens"].get<int64_t>(), 20);
  EXPECT_EQ(a["residual_recovered"], 1.0);
  // A worker recording the first layer's states reads the prompt off them, before and after
  // the layer.
  const auto hidden = run_eesched("attack hidden --encrypted " + enc + " --public " + model() + " --key " + key + " --text " +
                                  text.string() + " --max-tokens 24 --json");
  ASSERT_EQ(hidden.exit_code, 0) << hidden.output;
  const auto h = nlohmann::json::parse(hidden.output);
  EXPECT_EQ(h["prompt_tokens"], 24);
  EXPECT_EQ(h["tokens_recovered"], 1.0);
  EXPECT_EQ(h["vocab_recovered"], 1.0);
  EXPECT_GE(h["after_layer0_tokens_recovered"].get<double>(), 0.9);
  // The rotate scheme: the same text out, sorted rows gone, the vocabulary still recovered.
  const auto rot = (d / "rot").string();
  ASSERT_EQ(run_eesched("encrypt-model --model " + model() + " --key " + key + " --out " + rot + " --scheme rotate --no-quality").exit_code, 0);
  EXPECT_THAT(eesched::testing::read_file(std::filesystem::path(rot) / "ee.json"), HasSubstr("residual_rotation"));
  auto rotated = nlohmann::json::parse(run_eesched("generate --model " + rot + " --key " + key + " --tokenizer " +
                                                   (model_dir_ / "tokenizer.model").string() + args)
                                           .output);
  EXPECT_EQ(rotated["ids"], plain["ids"]);
  const auto rot_attack = run_eesched("attack weights --encrypted " + rot + " --public " + model() + " --key " + key + " --json");
  ASSERT_EQ(rot_attack.exit_code, 0) << rot_attack.output;
  const auto ra = nlohmann::json::parse(rot_attack.output);
  EXPECT_EQ(ra["method"], "eigenvectors + procrustes");
  EXPECT_GE(ra["vocab_recovered"].get<double>(), 0.99);
  EXPECT_GE(ra["residual_recovered"].get<double>(), 0.95);
  // The frontier, side by side: exact schemes keep the perplexity, noise changes it (this text is
  // too short and too far from the model's to say in which direction), none hides much.
  const auto frontier = run_eesched("attack frontier --model " + model() + " --key " + key + " --text " + text.string() +
                                    " --schemes permute,rotate --noise 0,0.5 --speed-tokens 4 --pairs 1 --json");
  ASSERT_EQ(frontier.exit_code, 0) << frontier.output;
  const auto rows = nlohmann::json::parse(frontier.output)["rows"];
  ASSERT_EQ(rows.size(), 4u);
  for (const auto& row : rows) {
    EXPECT_GE(row["vocab_recovered"].get<double>(), 0.5) << row.dump();
    EXPECT_FALSE(row["meets_goal"].get<bool>()) << row.dump();
    const double ratio = row["perplexity_ratio"].get<double>();
    EXPECT_EQ(std::abs(ratio - 1.0) < 1e-3, row["noise"] == 0) << row.dump();
  }
  auto bad = run_eesched("encrypt-model --model " + model() + " --key " + key + " --out " + (d / "bad").string() + " --scheme aloe", true);
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_THAT(bad.output, HasSubstr("--scheme"));
  // What crosses the wire is exactly the encryption of the prompt, stop ids and answer under the
  // key. (Not merely "different from the plaintext": a random permutation has fixed points, so a
  // single repeated token can legitimately encrypt to itself.)
  const ee::Codec codec(ee::Key::load(key));
  EXPECT_EQ(secret["wire"]["to_worker"].get<std::vector<int64_t>>(), codec.encrypt(plain["prompt_ids"].get<std::vector<int64_t>>()));
  EXPECT_EQ(secret["wire"]["from_worker"].get<std::vector<int64_t>>(), codec.encrypt(plain["ids"].get<std::vector<int64_t>>()));
  EXPECT_EQ(secret["wire"]["stop_ids"].get<std::vector<int64_t>>(), std::vector<int64_t>{});  // --ignore-eos: none
  // The prompt has several distinct tokens; all of them being fixed points is ~1e-12.
  EXPECT_NE(secret["wire"]["to_worker"], plain["prompt_ids"]);

  auto shown = run_eesched("generate --model " + enc + " --key " + key + " --tokenizer " + (model_dir_ / "tokenizer.model").string() +
                               " --prompt hello --max-new-tokens 3 --show-wire",
                           true);
  EXPECT_EQ(shown.exit_code, 0);
  EXPECT_THAT(shown.output, HasSubstr("wire -> worker"));
  EXPECT_THAT(shown.output, HasSubstr("wire <- worker"));

  // Refusals, each one line: another key, no key, encrypting twice.
  const auto other = (d / "other.eekey").string();
  ASSERT_EQ(run_eesched("keygen --model " + model() + " --out " + other).exit_code, 0);
  for (const auto& [cmd, needle] : std::vector<std::pair<std::string, std::string>>{
           {"generate --model " + enc + " --key " + other + " --tokenizer " + (model_dir_ / "tokenizer.model").string() + " --prompt hi",
            "wrong key"},
           {"generate --model " + enc + " --prompt hi", "encrypted model"},
           {"encrypt-model --model " + enc + " --key " + key + " --out " + (d / "enc2").string(), "already encrypted"},
       })
    expect_one_line_error(cmd, needle);
}

// rotate-key: from the encrypted directory and the old key only, a new key and the model under it,
// answering as the plaintext does; the time and the bytes to ship printed; mistakes refused.
TEST_F(Cli, RotateKeyReencryptsWithoutThePlaintextAndPrintsTheBytesToShip) {
  TempDir d;
  const auto old_key = (d / "old.eekey").string(), new_key = (d / "new.eekey").string(), enc = (d / "enc" / "m").string();
  ASSERT_EQ(run_eesched("keygen --model " + model() + " --out " + old_key).exit_code, 0);
  ASSERT_EQ(run_eesched("--log-level warn encrypt-model --no-quality --model " + model() + " --key " + old_key + " --out " + enc).exit_code, 0);
  const auto r = run_eesched("rotate-key --key " + old_key + " --model " + enc + " --out " + (d / "rot").string() + " --out-key " + new_key);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("re-encryption"));
  EXPECT_THAT(r.output, HasSubstr("bytes to ship"));
  EXPECT_EQ(std::filesystem::status(new_key).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  const auto key = ee::Key::load(new_key);
  EXPECT_THAT(r.output, HasSubstr(key.fingerprint()));
  const auto rotated = (d / "rot" / "m").string();
  EXPECT_EQ(ee::Manifest::read(rotated)->key_fingerprint, key.fingerprint());

  const std::string args = " --prompt 'Fellow citizens of the' --max-new-tokens 12 --ignore-eos --json";
  const auto plain = nlohmann::json::parse(run_eesched("generate --model " + model() + args).output);
  const auto tok = " --tokenizer " + (model_dir_ / "tokenizer.model").string();
  const auto secret = nlohmann::json::parse(run_eesched("generate --model " + rotated + " --key " + new_key + tok + args).output);
  EXPECT_EQ(secret["ids"], plain["ids"]);
  EXPECT_EQ(secret["text"], plain["text"]);

  for (const auto& [cmd, needle] : std::vector<std::pair<std::string, std::string>>{
           {"generate --model " + rotated + " --key " + old_key + tok + " --prompt hi", "wrong key"},
           {"rotate-key --key " + new_key + " --model " + enc + " --out " + (d / "x").string() + " --out-key " + (d / "y").string(),
            "wrong key"},
           {"rotate-key --key " + old_key + " --model " + model() + " --out " + (d / "x").string() + " --out-key " + (d / "y").string(),
            "is not encrypted"},
           {"rotate-key --key " + old_key + " --model " + enc + " --out " + (d / "rot").string() + " --out-key " + (d / "y").string(),
            "--force"},
           {"rotate-key --key " + old_key + " --model " + enc + " --out " + (d / "x").string(), "exactly one of --out-key"},
       })
    expect_one_line_error(cmd, needle);
  EXPECT_FALSE(std::filesystem::exists(d / "y")) << "no key is made when nothing can be rotated";
}

// Arms on the command line, on the committed demo models (trained, so greedy choices are clear).
TEST_F(Cli, GenerateArmsAgreeWithKvAndRefuseWhatDoesNotApply) {
  const auto src = eesched::testing::source_dir();
  const std::string models = " --model " + (src / "models/target").string();
  const std::string draft = " --draft " + (src / "models/draft").string();
  const std::string args = " --prompt 'The state of the Union' --max-new-tokens 16 --ignore-eos --json";
  const auto kv = nlohmann::json::parse(run_eesched("generate" + models + args).output);
  EXPECT_EQ(kv["arm"], "kv");
  EXPECT_FALSE(kv.contains("acceptance_rate"));
  for (const char* arm : {"kv+spec4", "plain", "kv+spec2"}) {
    const auto r = nlohmann::json::parse(run_eesched("generate" + models + draft + " --arm " + arm + args).output);
    EXPECT_EQ(r["ids"], kv["ids"]) << arm;  // lossless arms: the same greedy tokens
    EXPECT_EQ(r["arm"], arm);
    EXPECT_EQ(r.contains("acceptance_rate"), std::string(arm).find("spec") != std::string::npos);
  }
  const auto int8 = nlohmann::json::parse(run_eesched("generate" + models + " --arm int8+kv" + args).output);
  EXPECT_EQ(int8["arm"], "kv+int8");  // canonical name
  EXPECT_EQ(int8["ids"].size(), 16u);

  for (const auto& [cmd, needle] : std::vector<std::pair<std::string, std::string>>{
           {"generate" + models + " --arm kv+spec4 --prompt hi", "needs a draft"},
           {"generate" + models + " --arm kv+int4 --prompt hi", "unknown component 'int4'"},
           {"generate" + models + " --arm int8 --prompt hi", "must include 'kv'"},
           {"generate" + models + " --arm kv+int8 --no-kv-cache --prompt hi", "does not combine"},
       })
    expect_one_line_error(cmd, needle);
}

// The owner's quality figures: measured on plaintext, written next to the model, carried into
// ee.json by encrypt-model, and re-measured for an encrypted directory from its plaintext.
TEST_F(Cli, MeasureQualityRecordsTheTableWhereWorkersReadIt) {
  const auto src = eesched::testing::source_dir();
  TempDir d;
  std::filesystem::copy(model_dir_, d / "m");
  const auto m = (d / "m").string(), enc = (d / "enc").string(), key = (d / "k.eekey").string();
  // Calibration and held-out text differ (here: the repository's own prose).
  const std::string inputs = " --heldout " + (src / "docs/ee.md").string() + " --calibration " + (src / "README.md").string() +
                             " --tokens 300 --calibration-tokens 300 --context 64";
  const std::string texts = inputs + " --transforms int8,prune20,int8+prune20";
  auto r = run_eesched("measure-quality --model " + m + texts + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["prune_scores"], "activation");
  EXPECT_EQ(j["heldout_tokens"], 300);
  std::set<std::string> keys;
  for (const auto& [k, q] : j["quality"].items()) {
    keys.insert(k);
    EXPECT_GT(q["ppl_ratio"].get<double>(), 0.5) << k;
    EXPECT_GE(q["top1_agreement"].get<double>(), 0.0) << k;
    EXPECT_LE(q["top1_agreement"].get<double>(), 1.0) << k;
  }
  EXPECT_EQ(keys, (std::set<std::string>{"int8", "prune20", "int8+prune20"}));
  EXPECT_EQ(nlohmann::json::parse(eesched::testing::read_file(d / "m" / "quality.json")), j["quality"]);
  EXPECT_TRUE(std::filesystem::exists(d / "m" / "prune_stats.safetensors"));
  // The comparison with weight-norm pruning writes nothing.
  const auto before = eesched::testing::read_file(d / "m" / "quality.json");
  auto w = nlohmann::json::parse(run_eesched("measure-quality --model " + m + texts + " --prune-scores weights --json").output);
  EXPECT_EQ(w["prune_scores"], "weights");
  EXPECT_EQ(w["wrote"].size(), 0u);
  EXPECT_EQ(w["quality"]["int8"], j["quality"]["int8"]);  // int8 does not depend on the scores
  EXPECT_EQ(eesched::testing::read_file(d / "m" / "quality.json"), before);

  // encrypt-model reuses the current quality.json (same transforms) and ships the statistics.
  ASSERT_EQ(run_eesched("keygen --model " + m + " --out " + key).exit_code, 0);
  auto e = run_eesched("encrypt-model --model " + m + " --key " + key + " --out " + enc + " --transforms int8,prune20,int8+prune20", true);
  ASSERT_EQ(e.exit_code, 0) << e.output;
  EXPECT_THAT(e.output, HasSubstr("measured by measure-quality"));
  EXPECT_EQ(data_quality(enc), j["quality"]);
  EXPECT_TRUE(std::filesystem::exists(d / "enc" / "prune_stats.safetensors"));
  EXPECT_FALSE(std::filesystem::exists(d / "enc" / "quality.json"));

  // An encrypted directory is measured from its plaintext, with the key.
  expect_one_line_error("measure-quality --model " + enc + texts, "pass --plaintext");
  expect_one_line_error("measure-quality --model " + enc + " --plaintext " + m + texts, "needs --key");
  auto again = run_eesched("measure-quality --model " + enc + " --plaintext " + m + " --key " + key + inputs + " --transforms int8 --json");
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_EQ(data_quality(enc).size(), 1u);
  EXPECT_EQ(data_quality(enc)["int8"], j["quality"]["int8"]);
  // Another model is not its plaintext.
  eesched::testing::tiny_model(99).save(d / "other");
  std::filesystem::copy_file(model_dir_ / "tokenizer.model", d / "other" / "tokenizer.model");
  expect_one_line_error("measure-quality --model " + enc + " --plaintext " + (d / "other").string() + " --key " + key + texts,
                        "is not the plaintext of");

  // Bad input: one line each.
  std::filesystem::create_directories(d / "notok");
  eesched::testing::tiny_model().save(d / "notok");
  expect_one_line_error("measure-quality --model " + (d / "notok").string() + texts, "has no tokenizer (tokenizer.json or tokenizer.model)");
  auto missing = run_eesched("measure-quality --model " + m + " --heldout /nonexistent.txt", true);
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_THAT(missing.output, HasSubstr("/nonexistent.txt"));
  expect_one_line_error("measure-quality --model " + m + inputs + " --transforms int8,kv+spec4", "not a lossy weight transform");
  std::ofstream(d / "ids.txt") << "1 2 3 99999";
  expect_one_line_error("measure-quality --model " + (d / "notok").string() + " --heldout-ids " + (d / "ids.txt").string(),
                        "'99999' is not a token id");
  std::ofstream(d / "m" / "quality.json") << "{\"int8\": 3}";
  expect_one_line_error("encrypt-model --force --model " + m + " --key " + key + " --out " + enc, "quality.json");
}

// A Hugging Face checkpoint carries tokenizer.json, not tokenizer.model: the owner measures its
// quality from text all the same, on the ids `tokenize` gives for that text.
TEST_F(Cli, MeasureQualityReadsAHuggingFaceTokenizerJson) {
  const auto tok = eesched::testing::tokenizers_dir() / "qwen2_5";
  if (!std::filesystem::exists(tok / "tokenizer.json")) GTEST_SKIP() << "tokenizers not fetched (tools/fetch-tokenizers.sh)";
  TempDir d;
  auto config = eesched::testing::family_config("qwen2");
  config.vocab_size = 151936;  // Qwen2.5's embedding rows
  eesched::runtime::random_model(config, 3).save(d / "m");
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) std::filesystem::copy_file(tok / f, d / "m" / f);
  const std::string text = "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
                           "foolishness, it was the epoch of belief, it was the epoch of incredulity.";
  std::ofstream(d / "text.txt") << text;
  auto ids = run_eesched("tokenize --tokenizer " + (d / "m").string() + " --text '" + text + "'");
  ASSERT_EQ(ids.exit_code, 0) << ids.output;
  std::ofstream(d / "ids.txt") << ids.output;
  const std::string common = " --model " + (d / "m").string() + " --calibration " + (d / "text.txt").string() +
                             " --tokens 20 --context 16 --transforms int8 --json";
  auto by_text = run_eesched("measure-quality --heldout " + (d / "text.txt").string() + common);
  ASSERT_EQ(by_text.exit_code, 0) << by_text.output;
  auto by_ids = run_eesched("measure-quality --heldout-ids " + (d / "ids.txt").string() + common);
  ASSERT_EQ(by_ids.exit_code, 0) << by_ids.output;
  EXPECT_EQ(nlohmann::json::parse(by_text.output)["heldout_tokens"], 20);
  EXPECT_EQ(nlohmann::json::parse(by_text.output)["quality"], nlohmann::json::parse(by_ids.output)["quality"]);
}

TEST_F(Cli, BenchArmsJsonHasOneRowPerApplicableArm) {
  const auto src = eesched::testing::source_dir();
  TempDir d;
  std::ofstream(d / "heldout.txt") << "It was the best of times, it was the worst of times, it was the age of wisdom, "
                                      "it was the age of foolishness, it was the epoch of belief.\n";
  const std::string common = " --model " + (src / "models/target").string() + " --tokens 4 --repeats 1 --prompt-tokens 4 --ppl-tokens 16 --ppl-context 16 --heldout " + (d / "heldout.txt").string() + " --json";
  auto r = run_eesched("bench-arms --arms kv+int8,kv+spec2,plain" + common);
  ASSERT_EQ(r.exit_code, 0);
  const auto j = nlohmann::json::parse(r.output);
  std::set<std::string> arms;
  for (const auto& row : j["rows"]) {
    arms.insert(row["arm"]);
    for (const char* field : {"ms_per_token", "tokens_per_s", "speedup_vs_kv", "acceptance_rate", "perplexity_ratio", "lossless"})
      EXPECT_TRUE(row.contains(field)) << field;
    EXPECT_GT(row["ms_per_token"].get<double>(), 0.0);
  }
  EXPECT_EQ(arms, (std::set<std::string>{"kv", "kv+int8", "plain"}));  // kv, the reference, is always measured
  ASSERT_EQ(j["refused"].size(), 1u);
  EXPECT_EQ(j["refused"][0]["arm"], "kv+spec2");
  EXPECT_THAT(j["refused"][0]["reason"].get<std::string>(), HasSubstr("draft"));
  for (const auto& row : j["rows"]) {
    if (row["arm"] == "kv+int8") {
      EXPECT_NEAR(row["perplexity_ratio"].get<double>(), 1.0, 0.05);
    }
    if (row["arm"] == "kv") {
      EXPECT_DOUBLE_EQ(row["speedup_vs_kv"].get<double>(), 1.0);
    }
  }
  auto with_draft = nlohmann::json::parse(
      run_eesched("bench-arms --arms kv+spec2 --draft " + (src / "models/draft").string() + common).output);
  ASSERT_EQ(with_draft["rows"].size(), 2u);
  EXPECT_GE(with_draft["rows"][1]["acceptance_rate"].get<double>(), 0.0);
  EXPECT_LE(with_draft["rows"][1]["acceptance_rate"].get<double>(), 1.0);
}

}  // namespace

// tokenize: a tokenizer.model (always here) and, when fetched, a real tokenizer.json directory.
TEST_F(Cli, TokenizeEncodesDecodesAndRendersChats) {
  const auto spm = eesched::testing::tokenizer_path().string();
  auto enc = run_eesched("tokenize --tokenizer " + spm + " --text 'Call me Ishmael.' --json");
  ASSERT_EQ(enc.exit_code, 0) << enc.output;
  const auto ids = nlohmann::json::parse(enc.output)["ids"].get<std::vector<int64_t>>();
  ASSERT_GT(ids.size(), 2u);
  std::string list;
  for (auto id : ids) list += (list.empty() ? "" : ",") + std::to_string(id);
  auto dec = run_eesched("tokenize --tokenizer " + model() + " --ids " + list);  // a directory: its tokenizer.model
  EXPECT_EQ(dec.exit_code, 0);
  EXPECT_EQ(dec.output, "Call me Ishmael.\n");
  expect_one_line_error("tokenize --tokenizer " + spm, "--text");
  expect_one_line_error("tokenize --tokenizer /nonexistent --text x", "nonexistent");

  const auto qwen = eesched::testing::tokenizers_dir() / "qwen3";
  if (!std::filesystem::exists(qwen / "tokenizer.json")) GTEST_SKIP() << "tokenizers not fetched (tools/fetch-tokenizers.sh)";
  auto hf = run_eesched("tokenize --tokenizer " + qwen.string() + " --text 'Hello world<|im_end|>'");
  EXPECT_EQ(hf.exit_code, 0);
  EXPECT_EQ(hf.output, "9707 1879 151645\n");  // the reference's ids (tests/data/tokenizers/qwen3.json)
  TempDir tmp;
  const auto chat = tmp.path() / "chat.json";
  std::ofstream(chat) << R"([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])";
  auto r = run_eesched("tokenize --tokenizer " + qwen.string() + " --chat " + chat.string() + " --add-generation-prompt");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["text"], "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(j["ids"].front(), 151644);
}

// tokenize --chat with the other real templates: Qwen2.5's default system turn, Mistral Nemo's
// [INST] form, each equal to the jinja2 reference (tests/data/chat_templates/); a named family.
TEST_F(Cli, TokenizeRendersQwen25AndMistralChats) {
  const auto dir = eesched::testing::tokenizers_dir();
  for (const char* name : {"qwen2_5", "mistral_nemo"})
    if (!std::filesystem::exists(dir / name / "tokenizer.json"))
      GTEST_SKIP() << (dir / name) << " not fetched (tools/fetch-tokenizers.sh)";
  TempDir tmp;
  for (const char* name : {"qwen2_5", "mistral_nemo"}) {
    const auto golden = nlohmann::json::parse(
        eesched::testing::read_file(eesched::testing::source_dir() / "tests/data/chat_templates" / (std::string(name) + ".json")));
    int checked = 0;
    for (const auto& c : golden.at("cases")) {
      if (c.contains("error") || !c.at("add_generation_prompt").get<bool>() || checked == 2) continue;
      const auto chat = tmp.path() / "chat.json";
      std::ofstream(chat) << c.at("messages").dump();
      auto r = run_eesched("tokenize --tokenizer " + (dir / name).string() + " --chat " + chat.string() + " --add-generation-prompt");
      ASSERT_EQ(r.exit_code, 0) << r.output;
      EXPECT_EQ(nlohmann::json::parse(r.output).at("text"), c.at("text")) << name << " " << c.at("messages").dump();
      ++checked;
    }
    EXPECT_EQ(checked, 2) << name;  // without and with a system message
  }
  const auto chat = tmp.path() / "hi.json";
  std::ofstream(chat) << R"([{"role": "user", "content": "Hi"}])";
  auto r = run_eesched("tokenize --tokenizer " + (dir / "qwen2_5").string() + " --chat " + chat.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(r.output).at("text"),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n");
  r = run_eesched("tokenize --tokenizer " + (dir / "mistral_nemo").string() + " --chat " + chat.string() + " --chat-template mistral");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(r.output).at("text"), "<s>[INST]Hi[/INST]");
  expect_one_line_error("tokenize --tokenizer " + (dir / "mistral_nemo").string() + " --chat " + chat.string() + " --chat-template vicuna",
                        "llama3, chatml (Qwen), llama2, mistral");
}
