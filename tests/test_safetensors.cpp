#include "runtime/safetensors.h"

#include "runtime/error.h"
#include "tests/test_helpers.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>

namespace fs = std::filesystem;
using eesched::runtime::DType;
using eesched::runtime::Error;
using eesched::runtime::SafetensorsFile;
using eesched::runtime::write_safetensors;
using ::testing::HasSubstr;
using ::testing::Not;

namespace {

using eesched::testing::error_of;

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::random_device rd;
    dir_ = fs::temp_directory_path() / ("eesched-st-" + std::string(info->name()) + "-" +
                                        std::to_string(::getpid()) + "-" + std::to_string(rd()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // Writes raw bytes: 8-byte LE length, the header text, then `data`.
  fs::path write_raw(const std::string& name, const std::string& header, const std::string& data,
                     uint64_t header_len_override = UINT64_MAX) {
    const fs::path p = dir_ / name;
    std::ofstream out(p, std::ios::binary);
    const uint64_t len = header_len_override == UINT64_MAX ? header.size() : header_len_override;
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>((len >> (8 * i)) & 0xff));
    out << header << data;
    return p;
  }

  fs::path dir_;
};


std::string open_error(const fs::path& p) {
  return error_of([&] { (void)SafetensorsFile::open(p); });
}

void expect_one_line(const std::string& msg) {
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  EXPECT_FALSE(msg.empty());
}

uint64_t read_header_len(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  unsigned char b[8] = {};
  in.read(reinterpret_cast<char*>(b), 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | b[i];
  return n;
}

}  // namespace

TEST(SafetensorsDType, NamesAndSizes) {
  EXPECT_STREQ(eesched::runtime::dtype_name(DType::F32), "F32");
  EXPECT_STREQ(eesched::runtime::dtype_name(DType::BF16), "BF16");
  EXPECT_STREQ(eesched::runtime::dtype_name(DType::BOOL), "BOOL");
  EXPECT_EQ(eesched::runtime::dtype_size(DType::F32), 4u);
  EXPECT_EQ(eesched::runtime::dtype_size(DType::F16), 2u);
  EXPECT_EQ(eesched::runtime::dtype_size(DType::BF16), 2u);
  EXPECT_EQ(eesched::runtime::dtype_size(DType::F64), 8u);
  EXPECT_EQ(eesched::runtime::dtype_size(DType::I8), 1u);
  EXPECT_EQ(eesched::runtime::dtype_size(DType::I64), 8u);
  EXPECT_EQ(eesched::runtime::dtype_size(DType::BOOL), 1u);
}

TEST_F(SafetensorsTest, RoundTripPreservesNamesDtypesShapesValuesAndMetadata) {
  at::manual_seed(0);
  const at::Tensor big = at::randn({4, 6}, at::kFloat);
  const at::Tensor view = big.narrow(1, 1, 3);  // non-contiguous slice
  ASSERT_FALSE(view.is_contiguous());
  const at::Tensor transposed = at::arange(12, at::kLong).reshape({3, 4}).t();
  ASSERT_FALSE(transposed.is_contiguous());

  const std::vector<std::pair<std::string, at::Tensor>> tensors = {
      {"model.embed_tokens.weight", at::randn({5, 3}, at::kFloat)},
      {"model.layers.0.self_attn.q_proj.weight", at::randn({2, 3, 2}).to(at::kHalf)},
      {"model.norm.weight", at::randn({7}).to(at::kBFloat16)},
      {"quant.i8", at::arange(-8, 8, at::kChar).reshape({4, 4})},
      {"positions", at::arange(10, at::kLong) * int64_t{1000000007}},
      {"slice", view},
      {"transposed", transposed},
      {"scalar", at::scalar_tensor(3.5, at::kFloat)},  // 0-d: shape []
      {"empty", at::empty({0, 4}, at::kFloat)},
      {"f64", at::randn({3}, at::kDouble)},
      {"u8", at::arange(250, 256, at::kByte)},
      {"i16", at::arange(-3, 3, at::kShort)},
      {"i32", at::arange(-3, 3, at::kInt)},
      {"flags", at::arange(6, at::kInt).remainder(2).to(at::kBool)},
  };
  const std::map<std::string, std::string> metadata = {{"format", "pt"},
                                                       {"note", "eesched test \xc3\xa9"}};
  const fs::path p = dir_ / "model.safetensors";
  write_safetensors(p, tensors, metadata);

  const SafetensorsFile f = SafetensorsFile::open(p);
  EXPECT_EQ(f.path(), p);
  EXPECT_EQ(f.metadata(), metadata);
  ASSERT_EQ(f.tensors().size(), tensors.size());
  // File order is the write order.
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    EXPECT_EQ(f.tensors()[i].name, tensors[i].first);
  }
  for (const auto& [name, expected] : tensors) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(f.contains(name));
    const auto* info = f.find(name);
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->shape, expected.sizes().vec());
    EXPECT_EQ(info->numel(), expected.numel());
    EXPECT_EQ(info->end - info->begin,
              static_cast<uint64_t>(expected.numel()) * eesched::runtime::dtype_size(info->dtype));
    const at::Tensor got = f.load(name);
    EXPECT_TRUE(got.is_contiguous());
    EXPECT_EQ(got.device().type(), at::kCPU);
    EXPECT_EQ(got.scalar_type(), expected.scalar_type());
    EXPECT_EQ(got.sizes(), expected.sizes());
    EXPECT_TRUE(at::equal(got, expected));
  }
  EXPECT_EQ(f.find("scalar")->dtype, DType::F32);
  EXPECT_TRUE(f.find("scalar")->shape.empty());
  EXPECT_EQ(f.find("model.norm.weight")->dtype, DType::BF16);
  EXPECT_EQ(f.find("model.layers.0.self_attn.q_proj.weight")->dtype, DType::F16);
  EXPECT_EQ(f.find("quant.i8")->dtype, DType::I8);
  EXPECT_EQ(f.find("positions")->dtype, DType::I64);
  EXPECT_EQ(f.find("flags")->dtype, DType::BOOL);

  // The loaded tensor owns its memory: it outlives the mapping.
  at::Tensor survivor;
  {
    SafetensorsFile moved = SafetensorsFile::open(p);
    SafetensorsFile other = std::move(moved);
    survivor = other.load("positions");
  }
  EXPECT_TRUE(at::equal(survivor, tensors[4].second));

  // Nothing but the file itself is left in the directory (no temp files).
  int entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir_)) ++entries;
  EXPECT_EQ(entries, 1);
}

TEST_F(SafetensorsTest, NoMetadataWritesNoMetadataKey) {
  const fs::path p = dir_ / "a.safetensors";
  write_safetensors(p, {{"w", at::ones({2}, at::kFloat)}});
  std::ifstream in(p, std::ios::binary);
  const std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_THAT(all, Not(HasSubstr("__metadata__")));
  const auto f = SafetensorsFile::open(p);
  EXPECT_TRUE(f.metadata().empty());
  EXPECT_TRUE(at::equal(f.load("w"), at::ones({2}, at::kFloat)));
}

TEST_F(SafetensorsTest, OverwritesAnExistingFile) {
  const fs::path p = dir_ / "a.safetensors";
  write_safetensors(p, {{"old", at::ones({100}, at::kFloat)}});
  write_safetensors(p, {{"new", at::zeros({2}, at::kInt)}});
  const auto f = SafetensorsFile::open(p);
  EXPECT_FALSE(f.contains("old"));
  EXPECT_TRUE(at::equal(f.load("new"), at::zeros({2}, at::kInt)));
}

TEST_F(SafetensorsTest, HeaderLengthIsEightByteAligned) {
  // Vary the name length so every padding amount 0..7 is exercised.
  for (int extra = 0; extra < 8; ++extra) {
    const fs::path p = dir_ / ("aligned" + std::to_string(extra) + ".safetensors");
    const std::string name = std::string(1, 't').append(static_cast<std::size_t>(extra), 'x');
    write_safetensors(p, {{name, at::ones({3}, at::kFloat)}},
                      extra % 2 ? std::map<std::string, std::string>{{"k", "v"}}
                                : std::map<std::string, std::string>{});
    const uint64_t n = read_header_len(p);
    EXPECT_EQ((8 + n) % 8, 0u) << "header length " << n;
    EXPECT_EQ(fs::file_size(p), 8 + n + 3 * 4);
    EXPECT_TRUE(at::equal(SafetensorsFile::open(p).load(name),
                          at::ones({3}, at::kFloat)));
  }
}

TEST_F(SafetensorsTest, TruncatedFileNamesTheLastTensor) {
  const fs::path p = dir_ / "model.safetensors";
  write_safetensors(p, {{"model.embed_tokens.weight", at::ones({4, 4}, at::kFloat)},
                        {"model.norm.weight", at::ones({4}, at::kFloat)}});
  fs::resize_file(p, fs::file_size(p) - 3);
  const std::string msg = open_error(p);
  expect_one_line(msg);
  EXPECT_THAT(msg, HasSubstr("model.safetensors"));
  EXPECT_THAT(msg, HasSubstr("'model.norm.weight'"));
  EXPECT_THAT(msg, Not(HasSubstr("embed_tokens")));
  EXPECT_THAT(msg, HasSubstr("data section"));
}

TEST_F(SafetensorsTest, OffsetBeyondTheFileNamesTheTensor) {
  const std::string header =
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("model.norm.weight":{"dtype":"F32","shape":[4],"data_offsets":[1000,1016]}})";
  const fs::path p = write_raw("bad.safetensors", header, std::string(8, '\0'));
  const std::string msg = open_error(p);
  expect_one_line(msg);
  EXPECT_THAT(msg, HasSubstr("bad.safetensors"));
  EXPECT_THAT(msg, HasSubstr("'model.norm.weight'"));
  EXPECT_THAT(msg, HasSubstr("[1000, 1016]"));
}

TEST_F(SafetensorsTest, HugeOffsetsAndShapesDoNotOverflow) {
  // end - begin matches a shape whose byte count wraps around 2^64 if computed carelessly.
  const std::string header =
      R"({"w":{"dtype":"F32","shape":[4611686018427387904,2],"data_offsets":[0,0]}})";
  const std::string msg = open_error(write_raw("huge.safetensors", header, ""));
  expect_one_line(msg);
  EXPECT_THAT(msg, HasSubstr("'w'"));

  const std::string header2 =
      R"({"w":{"dtype":"U8","shape":[16],"data_offsets":[18446744073709551600,18446744073709551615]}})";
  const std::string msg2 = open_error(write_raw("huge2.safetensors", header2, ""));
  expect_one_line(msg2);
  EXPECT_THAT(msg2, HasSubstr("'w'"));
}

TEST_F(SafetensorsTest, ShapeThatDisagreesWithByteCountNamesTheTensor) {
  const std::string header =
      R"({"layer.weight":{"dtype":"F32","shape":[3,3],"data_offsets":[0,16]}})";
  const fs::path p = write_raw("shape.safetensors", header, std::string(16, '\0'));
  const std::string msg = open_error(p);
  expect_one_line(msg);
  EXPECT_THAT(msg, HasSubstr("'layer.weight'"));
  EXPECT_THAT(msg, HasSubstr("[3, 3]"));
}

TEST_F(SafetensorsTest, GarbageHeaderIsRejected) {
  const fs::path p = write_raw("garbage.safetensors", "this is {not json\n\x01", "data");
  const std::string msg = open_error(p);
  expect_one_line(msg);
  EXPECT_THAT(msg, HasSubstr("garbage.safetensors"));
  EXPECT_THAT(msg, HasSubstr("JSON"));
}

TEST_F(SafetensorsTest, NonObjectHeaderIsRejected) {
  EXPECT_THAT(open_error(write_raw("arr.safetensors", "[1,2,3]", "")), HasSubstr("JSON object"));
  EXPECT_THAT(open_error(write_raw("entry.safetensors", R"({"t": 5})", "")),
              HasSubstr("'t'"));
}

TEST_F(SafetensorsTest, HeaderLongerThanTheFileIsRejected) {
  const fs::path p = write_raw("long.safetensors", "{}", "", /*header_len_override=*/4096);
  const std::string msg = open_error(p);
  expect_one_line(msg);
  EXPECT_THAT(msg, HasSubstr("header length 4096"));

  // A random 8-byte prefix (e.g. a non-safetensors file) is a giant length: also rejected.
  const fs::path q = dir_ / "text.safetensors";
  std::ofstream(q) << "hello world, definitely not safetensors";
  expect_one_line(open_error(q));
}

TEST_F(SafetensorsTest, EmptyAndTinyFilesAreRejected) {
  const fs::path p = dir_ / "empty.safetensors";
  std::ofstream(p).close();
  const std::string msg = open_error(p);
  expect_one_line(msg);
  EXPECT_THAT(msg, HasSubstr("empty.safetensors"));
  EXPECT_THAT(msg, HasSubstr("empty"));

  const fs::path q = dir_ / "tiny.safetensors";
  std::ofstream(q) << "abc";
  EXPECT_THAT(open_error(q), HasSubstr("tiny.safetensors"));
}

TEST_F(SafetensorsTest, MissingFileAndDirectoryAreRejected) {
  const fs::path p = dir_ / "missing.safetensors";
  const std::string msg = open_error(p);
  expect_one_line(msg);
  EXPECT_EQ(msg, "cannot open " + p.string() + ": No such file or directory");

  const std::string dmsg = open_error(dir_);
  expect_one_line(dmsg);
  EXPECT_THAT(dmsg, HasSubstr("cannot open " + dir_.string()));
  EXPECT_THAT(dmsg, HasSubstr("Is a directory"));
}

TEST_F(SafetensorsTest, OverlappingTensorsAreRejected) {
  const std::string header =
      R"({"first":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
      R"("second":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})";
  const std::string msg = open_error(write_raw("overlap.safetensors", header, std::string(16, 0)));
  expect_one_line(msg);
  EXPECT_THAT(msg, HasSubstr("overlap"));
  EXPECT_THAT(msg, HasSubstr("'first'"));
  EXPECT_THAT(msg, HasSubstr("'second'"));
}

TEST_F(SafetensorsTest, GapsAndHeaderOrderAreAccepted) {
  // Header lists tensors out of data order and leaves a gap; tensors() is in data order.
  const std::string header =
      R"({"z_first":{"dtype":"I32","shape":[1],"data_offsets":[0,4]},)"
      R"("a_second":{"dtype":"I32","shape":[1],"data_offsets":[8,12]}})";
  std::string data = {1, 0, 0, 0, 9, 9, 9, 9, 2, 0, 0, 0};
  const auto f = SafetensorsFile::open(write_raw("gap.safetensors", header, data));
  ASSERT_EQ(f.tensors().size(), 2u);
  EXPECT_EQ(f.tensors()[0].name, "z_first");
  EXPECT_EQ(f.tensors()[1].name, "a_second");
  EXPECT_EQ(f.load("a_second").item<int32_t>(), 2);
  EXPECT_EQ(f.load("z_first").item<int32_t>(), 1);
}

TEST_F(SafetensorsTest, UnknownDtypeIsRejected) {
  const std::string header = R"({"w":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})";
  const std::string msg = open_error(write_raw("dtype.safetensors", header, "ab"));
  expect_one_line(msg);
  EXPECT_THAT(msg, HasSubstr("'w'"));
  EXPECT_THAT(msg, HasSubstr("F8_E4M3"));
}

TEST_F(SafetensorsTest, MalformedEntriesAreRejected) {
  struct Case {
    const char* header;
    const char* expect;
  };
  const Case cases[] = {
      {R"({"w":{"shape":[1],"data_offsets":[0,4]}})", "dtype"},
      {R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", "shape"},
      {R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", "shape"},
      {R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", "shape"},
      {R"({"w":{"dtype":"F32","shape":["1"],"data_offsets":[0,4]}})", "shape"},
      {R"({"w":{"dtype":"F32","shape":[1]}})", "data_offsets"},
      {R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", "data_offsets"},
      {R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", "data_offsets"},
      {R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", "data_offsets"},
      {R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"__metadata__":{"k":1}})",
       "__metadata__"},
      {R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"__metadata__":[]})",
       "__metadata__"},
      {R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
       R"("w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
       "more than once"},
  };
  int i = 0;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.header);
    std::string file = std::to_string(i++);
    file.insert(0, 1, 'm').append(".safetensors");
    const std::string msg = open_error(write_raw(file, c.header, "abcd"));
    expect_one_line(msg);
    EXPECT_THAT(msg, HasSubstr(c.expect));
  }
}

TEST_F(SafetensorsTest, LoadOfAbsentNameThrows) {
  const fs::path p = dir_ / "a.safetensors";
  write_safetensors(p, {{"present", at::ones({1}, at::kFloat)}});
  const auto f = SafetensorsFile::open(p);
  EXPECT_FALSE(f.contains("absent"));
  EXPECT_EQ(f.find("absent"), nullptr);
  const std::string msg = error_of([&] { (void)f.load("absent"); });
  EXPECT_EQ(msg, p.string() + ": no tensor named 'absent'");
}

TEST_F(SafetensorsTest, WritingIntoAMissingDirectoryThrowsAndLeavesNothing) {
  const fs::path missing = dir_ / "no" / "such" / "dir";
  const fs::path p = missing / "out.safetensors";
  const std::string msg =
      error_of([&] { write_safetensors(p, {{"w", at::ones({4}, at::kFloat)}}); });
  expect_one_line(msg);
  EXPECT_THAT(msg, HasSubstr(p.string()));
  EXPECT_FALSE(fs::exists(dir_ / "no"));
  EXPECT_TRUE(fs::is_empty(dir_));
}

TEST_F(SafetensorsTest, WritingRejectsBadArgumentsBeforeTouchingDisk) {
  const fs::path p = dir_ / "out.safetensors";
  EXPECT_THAT(error_of([&] {
                write_safetensors(p, {{"w", at::ones({1})}, {"w", at::ones({1})}});
              }),
              HasSubstr("'w'"));
  EXPECT_THAT(error_of([&] {
                write_safetensors(p, {{"c", at::ones({2}, at::kComplexFloat)}});
              }),
              HasSubstr("'c'"));
  EXPECT_THAT(error_of([&] { write_safetensors(p, {{"u", at::Tensor()}}); }), HasSubstr("'u'"));
  EXPECT_THAT(error_of([&] { write_safetensors(p, {{"__metadata__", at::ones({1})}}); }),
              HasSubstr("__metadata__"));
  EXPECT_TRUE(fs::is_empty(dir_));
}

TEST_F(SafetensorsTest, ShortWriteFailsAndRemovesTheTempFile) {
  // Simulate a full disk: cap the file size so write(2) fails with EFBIG part-way through.
  struct rlimit old {};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit capped = old;
  capped.rlim_cur = 4096;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &capped), 0);

  const fs::path p = dir_ / "full.safetensors";
  const std::string msg =
      error_of([&] { write_safetensors(p, {{"big", at::ones({64 * 1024}, at::kFloat)}}); });

  ::setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_handler);

  expect_one_line(msg);
  EXPECT_THAT(msg, HasSubstr("full.safetensors"));
  EXPECT_TRUE(fs::is_empty(dir_)) << "a partial or temp file was left behind";
}

TEST_F(SafetensorsTest, InvalidBoolBytesAreRejectedOnLoad) {
  const std::string header = R"({"b":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})";
  const auto f = SafetensorsFile::open(write_raw("bool.safetensors", header, std::string("\x01\x07", 2)));
  EXPECT_THAT(error_of([&] { (void)f.load("b"); }), HasSubstr("'b'"));
}

TEST_F(SafetensorsTest, PaddedHeaderFromOtherWritersIsAccepted) {
  // Header padded with trailing spaces, as the reference implementation does.
  std::string header = R"({"w":{"dtype":"I8","shape":[2,2],"data_offsets":[0,4]}})";
  header.append(13, ' ');
  const auto f = SafetensorsFile::open(write_raw("pad.safetensors", header, "\x01\x02\x03\x04"));
  EXPECT_TRUE(at::equal(f.load("w"), at::arange(1, 5, at::kChar).reshape({2, 2})));
}
