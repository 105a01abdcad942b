#include "net/metrics.h"

#include <algorithm>
#include <cmath>
#include <charconv>
#include <stdexcept>

namespace eesched::net {
namespace {

// Label values escape backslash, double quote and newline (the exposition format's rule).
std::string render_labels(const Labels& labels) {
  if (labels.empty()) return {};
  std::string out = "{";
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (i) out += ',';
    out += labels[i].first + "=\"";
    for (const char c : labels[i].second) {
      if (c == '\\') out += "\\\\";
      else if (c == '"') out += "\\\"";
      else if (c == '\n') out += "\\n";
      else out += c;
    }
    out += '"';
  }
  return out + "}";
}

std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  // The shortest text that reads back as the same double (0.1, not 0.10000000000000001).
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

// `labels` rendered with one more label (a histogram's le) appended.
std::string with_label(const std::string& rendered, const std::string& name, const std::string& value) {
  const std::string extra = name + "=\"" + value + "\"";
  if (rendered.empty()) return "{" + extra + "}";
  return rendered.substr(0, rendered.size() - 1) + "," + extra + "}";
}

const char* kind_name(Metrics::Kind k) {
  switch (k) {
    case Metrics::Kind::Counter: return "counter";
    case Metrics::Kind::Gauge: return "gauge";
    case Metrics::Kind::Histogram: return "histogram";
  }
  return "untyped";
}

}  // namespace

std::vector<double> Metrics::latency_buckets() {
  return {0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 30, 60, 120, 300};
}

void Metrics::declare(const std::string& name, Kind kind, const std::string& help, std::vector<double> buckets) {
  std::lock_guard lock(mu_);
  auto& f = families_[name];
  f.kind = kind;
  f.help = help;
  std::sort(buckets.begin(), buckets.end());
  f.buckets = std::move(buckets);
}

Metrics::Family& Metrics::family(const std::string& name, Kind kind) {
  const auto it = families_.find(name);
  if (it == families_.end()) throw std::logic_error("metric " + name + " used before it was declared");
  if (it->second.kind != kind && !(kind == Kind::Counter && it->second.kind == Kind::Gauge))
    throw std::logic_error("metric " + name + " is a " + kind_name(it->second.kind));
  return it->second;
}

void Metrics::add(const std::string& name, const Labels& labels, double delta) {
  std::lock_guard lock(mu_);
  family(name, Kind::Counter).series[render_labels(labels)].value += delta;
}

void Metrics::set(const std::string& name, const Labels& labels, double value) {
  std::lock_guard lock(mu_);
  family(name, Kind::Gauge).series[render_labels(labels)].value = value;
}

void Metrics::observe(const std::string& name, const Labels& labels, double value) {
  std::lock_guard lock(mu_);
  auto& f = family(name, Kind::Histogram);
  auto& s = f.series[render_labels(labels)];
  if (s.counts.empty()) s.counts.assign(f.buckets.size(), 0);
  const auto b = std::lower_bound(f.buckets.begin(), f.buckets.end(), value) - f.buckets.begin();
  if (b < static_cast<std::ptrdiff_t>(s.counts.size())) ++s.counts[static_cast<std::size_t>(b)];
  s.sum += value;
  ++s.count;
}

std::string Metrics::render() const {
  std::lock_guard lock(mu_);
  std::string out;
  for (const auto& [name, f] : families_) {
    out += "# HELP " + name + " " + f.help + "\n# TYPE " + name + " " + kind_name(f.kind) + "\n";
    // A counter or gauge nobody touched yet still shows as 0 (unlabelled), so dashboards see it.
    if (f.series.empty() && f.kind != Kind::Histogram) out += name + " 0\n";
    for (const auto& [labels, s] : f.series) {
      if (f.kind != Kind::Histogram) {
        out += name + labels + " " + number(s.value) + "\n";
        continue;
      }
      uint64_t cumulative = 0;
      for (std::size_t i = 0; i < f.buckets.size(); ++i) {
        cumulative += s.counts[i];
        out += name + "_bucket" + with_label(labels, "le", number(f.buckets[i])) + " " + std::to_string(cumulative) + "\n";
      }
      out += name + "_bucket" + with_label(labels, "le", "+Inf") + " " + std::to_string(s.count) + "\n";
      out += name + "_sum" + labels + " " + number(s.sum) + "\n";
      out += name + "_count" + labels + " " + std::to_string(s.count) + "\n";
    }
  }
  return out;
}

}  // namespace eesched::net
