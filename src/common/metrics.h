// A small Prometheus registry (text exposition format 0.0.4): counters, gauges and histograms
// with labels, plus collectors that render computed families at scrape time (queue depths read
// from the journal, the process's own figures). Thread-safe; references returned stay valid
// for the registry's life.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace iarelay {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  void inc(std::uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  std::uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> value_{0};
};

class Gauge {
 public:
  void set(double v) { value_.store(v, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  // Appends the _bucket/_sum/_count lines for `name` with `labels` (already rendered, may be "").
  void render(const std::string& name, const std::string& labels, std::string& out) const;

 private:
  mutable std::mutex mu_;
  std::vector<double> bounds_;
  std::vector<std::uint64_t> counts_;  // GUARDED_BY(mu_): one per bound, plus +Inf
  double sum_ = 0;                     // GUARDED_BY(mu_)
};

class Metrics {
 public:
  Counter& counter(const std::string& name, const std::string& help, const Labels& labels = {});
  Gauge& gauge(const std::string& name, const std::string& help, const Labels& labels = {});
  Histogram& histogram(const std::string& name, const std::string& help,
                       const std::vector<double>& bounds, const Labels& labels = {});
  // A function that appends complete families (with # HELP/# TYPE) at each scrape.
  void add_collector(std::function<void(std::string&)> collector);
  std::string render() const;

  static std::string render_labels(const Labels& labels);

 private:
  struct Family {
    std::string type, help;
    std::map<std::string, std::unique_ptr<Counter>> counters;
    std::map<std::string, std::unique_ptr<Gauge>> gauges;
    std::map<std::string, std::unique_ptr<Histogram>> histograms;
  };
  mutable std::mutex mu_;
  std::map<std::string, Family> families_;                     // GUARDED_BY(mu_)
  std::vector<std::function<void(std::string&)>> collectors_;  // GUARDED_BY(mu_)
};

// The process_* families of the Prometheus client libraries' process collector, read from
// /proc/self (Linux): process_cpu_seconds_total, process_resident_memory_bytes,
// process_virtual_memory_bytes, process_open_fds, process_max_fds (the soft limit) and
// process_start_time_seconds (Unix time). A figure that cannot be read is left out.
std::string render_process_metrics();

// A collector that runs `render` at most once per `min_interval`, and never more often than
// every 100 times its last run's duration (so an expensive query takes at most 1% of a
// thread however often Prometheus scrapes); in between, the last text is appended again.
std::function<void(std::string&)> throttled_collector(std::function<std::string()> render,
                                                      std::chrono::milliseconds min_interval);

}  // namespace iarelay
