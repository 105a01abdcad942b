// data/: the arm catalog and task types (the SQLite store has its own suite, test_store).
#include <gtest/gtest.h>

#include <functional>
#include <set>

#include "data/arm.h"
#include "data/error.h"

namespace eesched::data {
namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Arm, ParsesAndCanonicalizes) {
  auto a = parse_arm("spec4+int8+kv");
  EXPECT_EQ(a.name, "kv+int8+spec4");
  EXPECT_TRUE(a.kv_cache);
  EXPECT_TRUE(a.int8);
  EXPECT_EQ(a.spec_k, 4);
  EXPECT_EQ(a.prune_percent, 0);
  EXPECT_FALSE(a.lossless());
  EXPECT_TRUE(a.needs_draft());
  EXPECT_EQ(a.components(), (std::vector<std::string>{"kv", "int8", "spec4"}));

  auto p = parse_arm("plain");
  EXPECT_FALSE(p.kv_cache);
  EXPECT_TRUE(p.lossless());
  EXPECT_EQ(p.components(), std::vector<std::string>{"plain"});
  EXPECT_EQ(parse_arm(" kv+prune30 ").prune_percent, 30);
  EXPECT_TRUE(parse_arm("kv+spec8").lossless());
}

TEST(Arm, RejectsMalformedNamesWithAReason) {
  EXPECT_NE(error_of([] { parse_arm("int8"); }).find("must include 'kv'"), std::string::npos);
  EXPECT_NE(error_of([] { parse_arm("kv+int4"); }).find("unknown component 'int4'"), std::string::npos);
  EXPECT_NE(error_of([] { parse_arm("kv+spec0"); }).find("1..16"), std::string::npos);
  EXPECT_NE(error_of([] { parse_arm("kv+specx"); }).find("1..16"), std::string::npos);
  EXPECT_NE(error_of([] { parse_arm("kv+prune95"); }).find("5..90"), std::string::npos);
  EXPECT_NE(error_of([] { parse_arm("kv+int8+int8"); }).find("twice"), std::string::npos);
  EXPECT_NE(error_of([] { parse_arm("plain+kv"); }).find("combines with nothing"), std::string::npos);
  EXPECT_NE(error_of([] { parse_arm(""); }).find("empty"), std::string::npos);
  EXPECT_NE(error_of([] { parse_arm_list("kv,kv"); }).find("twice"), std::string::npos);
}

TEST(Arm, CatalogIsCanonicalAndUnique) {
  const auto& arms = arm_catalog();
  ASSERT_GE(arms.size(), 6u);
  std::set<std::string> names;
  for (const auto& a : arms) {
    EXPECT_EQ(parse_arm(a.name).name, a.name);
    names.insert(a.name);
  }
  EXPECT_EQ(names.size(), arms.size());
  for (const char* required : {"plain", "kv", "kv+int8", "kv+spec4", "kv+prune30", "kv+int8+spec4"})
    EXPECT_TRUE(names.count(required)) << required;
  EXPECT_EQ(parse_arm_list("all").size(), arms.size());
  EXPECT_EQ(parse_arm_list("kv,kv+int8").size(), 2u);
}

TEST(Arm, RefusalsNameTheReason) {
  TaskSpec t;
  t.model = "m";
  t.quality = Quality::Exact;
  EXPECT_FALSE(arm_refusal(parse_arm("kv"), t));
  EXPECT_FALSE(arm_refusal(parse_arm("plain"), t));
  auto lossy = arm_refusal(parse_arm("kv+int8"), t);
  ASSERT_TRUE(lossy);
  EXPECT_NE(lossy->find("lossy"), std::string::npos);
  auto nodraft = arm_refusal(parse_arm("kv+spec4"), t);
  ASSERT_TRUE(nodraft);
  EXPECT_NE(nodraft->find("draft"), std::string::npos);
  t.draft = "d";
  EXPECT_FALSE(arm_refusal(parse_arm("kv+spec4"), t));
  t.batch = 4;
  auto batched = arm_refusal(parse_arm("kv+spec4"), t);
  ASSERT_TRUE(batched);
  EXPECT_NE(batched->find("batch 1"), std::string::npos);
  t.quality = Quality::Tolerant;
  EXPECT_FALSE(arm_refusal(parse_arm("kv+int8+prune30"), t));
}

TEST(Quality, RoundTrips) {
  EXPECT_EQ(parse_quality("exact"), Quality::Exact);
  EXPECT_STREQ(quality_name(parse_quality("tolerant")), "tolerant");
  EXPECT_NE(error_of([] { parse_quality("best"); }).find("'best'"), std::string::npos);
}

}  // namespace
}  // namespace eesched::data
