#pragma once
// Prometheus metrics, in the text exposition format (version 0.0.4) that /metrics serves:
// counters, gauges and histograms by name and labels, thread-safe. Names follow Prometheus
// conventions (eesched_ namespace, base units, _total for counters, _seconds for durations).
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace eesched::net {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Metrics {
 public:
  enum class Kind { Counter, Gauge, Histogram };

  // Declares a metric before its first use (its HELP line, and a histogram's bucket bounds).
  void declare(const std::string& name, Kind kind, const std::string& help, std::vector<double> buckets = {});

  void add(const std::string& name, const Labels& labels, double delta = 1.0);  // counter or gauge
  void set(const std::string& name, const Labels& labels, double value);        // gauge
  void observe(const std::string& name, const Labels& labels, double value);    // histogram

  // Every declared metric, its series sorted by labels; histograms with cumulative _bucket
  // series (le="+Inf" last), _sum and _count.
  std::string render() const;

  // Latency buckets in seconds, 5 ms to 5 min.
  static std::vector<double> latency_buckets();

 private:
  struct Series {
    double value = 0;                 // counter, gauge
    std::vector<uint64_t> counts;     // histogram: per bucket, not cumulative
    double sum = 0;
    uint64_t count = 0;
  };
  struct Family {
    Kind kind = Kind::Counter;
    std::string help;
    std::vector<double> buckets;
    std::map<std::string, Series> series;  // by rendered label set
  };
  Family& family(const std::string& name, Kind kind);

  mutable std::mutex mu_;
  std::map<std::string, Family> families_;
};

}  // namespace eesched::net
