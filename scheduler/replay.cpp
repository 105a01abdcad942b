#include "scheduler/replay.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "scheduler/placement.h"

namespace eesched::scheduler {
namespace {

double oracle_ms(const TaskCase& c) {
  double best = std::numeric_limits<double>::infinity();
  for (const auto& a : c.arms) best = std::min(best, c.latency.at(a.name));
  return best;
}

struct Accumulator {
  std::vector<double> slowdowns;
  int64_t hits = 0, close = 0;
  double total = 0;
  void add(double ms, double oracle) {
    slowdowns.push_back(ms / oracle);
    hits += ms <= oracle;  // ties with the oracle's latency count as right
    close += ms <= 1.05 * oracle;
    total += ms;
  }
  Score score(const std::string& label) const {
    Score s;
    s.label = label;
    s.cases = static_cast<int64_t>(slowdowns.size());
    if (slowdowns.empty()) return s;
    s.top1 = static_cast<double>(hits) / static_cast<double>(s.cases);
    s.within5 = static_cast<double>(close) / static_cast<double>(s.cases);
    double sum = 0;
    for (const double v : slowdowns) sum += v;
    s.mean_slowdown = sum / static_cast<double>(s.cases);
    auto sorted = slowdowns;
    std::sort(sorted.begin(), sorted.end());
    // Nearest-rank p95.
    const auto rank = static_cast<std::size_t>(std::ceil(0.95 * static_cast<double>(sorted.size())));
    s.p95_slowdown = sorted[std::max<std::size_t>(rank, 1) - 1];
    s.max_slowdown = sorted.back();
    s.total_ms = total;
    return s;
  }
};

}  // namespace

ReplayReport replay(const History& train, const History& test, const std::vector<const Policy*>& policies, uint64_t seed) {
  auto sbs = make_policy("single-best", nullptr);
  sbs->fit(train);
  return replay(*sbs, test, policies, seed);
}

ReplayReport replay(const Policy& single_best, const History& test, const std::vector<const Policy*>& policies, uint64_t seed) {
  ReplayReport r;
  r.cases = static_cast<int64_t>(test.cases.size());
  std::mt19937_64 unused(seed);
  for (const auto& c : test.cases) {
    r.oracle_total_ms += oracle_ms(c);
    r.sbs_total_ms += c.latency.at(place_case(c, single_best, unused).arm.name);
  }
  for (const auto* p : policies) {
    std::mt19937_64 rng(seed);
    Accumulator all;
    std::map<std::string, Accumulator> slices;
    for (const auto& c : test.cases) {
      // The coordinator's own decision function, on the case's worker with nothing queued.
      const auto arm = place_case(c, *p, rng).arm.name;
      const auto it = c.latency.find(arm);
      if (it == c.latency.end()) throw std::runtime_error("policy " + p->name() + " picked " + arm + ", which was not measured");
      const double oracle = oracle_ms(c);
      all.add(it->second, oracle);
      slices["model=" + c.model.name].add(it->second, oracle);
      slices["batch=" + std::to_string(c.spec.batch)].add(it->second, oracle);
      slices[std::string("quality=") + data::quality_name(c.spec.quality)].add(it->second, oracle);
      slices["threads=" + std::to_string(c.hardware.threads)].add(it->second, oracle);
      if (!c.machine.empty()) slices["machine=" + c.machine].add(it->second, oracle);
      slices["family=" + (c.model.architecture.empty() ? std::string("llama") : c.model.architecture) + "/" + c.model.dtype].add(it->second, oracle);
    }
    PolicyReport report;
    report.overall = all.score(p->name());
    const double gap = r.sbs_total_ms - r.oracle_total_ms;
    report.overall.closed_gap = gap > 0 ? (r.sbs_total_ms - report.overall.total_ms) / gap : std::nan("");
    for (const auto& [label, acc] : slices) report.slices.push_back(acc.score(label));
    r.policies.push_back(std::move(report));
  }
  return r;
}

}  // namespace eesched::scheduler
