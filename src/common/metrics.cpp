// Prometheus text rendering.
#include "common/metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

namespace iarelay {
namespace {

std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::string escape_label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

// The whole of a small /proc file ("" if it cannot be read).
std::string slurp(const char* path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void family(std::string& out, const char* name, const char* type, const char* help, double v) {
  out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" +
         name + " " + number(v) + "\n";
}

}  // namespace

std::string render_process_metrics() {
  std::string out;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  // /proc/self/stat: "pid (comm) state ppid ...": comm may hold spaces and parentheses, so the
  // fields are counted from the last ')'. After it, field 3 (state) is index 0.
  std::string stat = slurp("/proc/self/stat");
  if (size_t close = stat.rfind(')'); close != std::string::npos && ticks > 0) {
    std::istringstream in(stat.substr(close + 1));
    std::vector<std::string> f;
    for (std::string w; in >> w;) f.push_back(w);
    if (f.size() > 21) try {
        const double utime = std::stod(f[11]), stime = std::stod(f[12]);
        const double starttime = std::stod(f[19]), vsize = std::stod(f[20]), rss = std::stod(f[21]);
        family(out, "process_cpu_seconds_total", "counter",
               "Total user and system CPU time spent in seconds.", (utime + stime) / ticks);
        family(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.",
               vsize);
        family(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
               rss * page);
        // starttime counts ticks since boot; /proc/stat's btime is the boot's Unix time.
        std::istringstream boot(slurp("/proc/stat"));
        for (std::string line; std::getline(boot, line);)
          if (line.rfind("btime ", 0) == 0) {
            family(out, "process_start_time_seconds", "gauge",
                   "Start time of the process since unix epoch in seconds.",
                   std::stod(line.substr(6)) + starttime / ticks);
            break;
          }
      } catch (const std::exception&) {  // a field that is not a number: left out
      }
  }
  if (DIR* d = opendir("/proc/self/fd")) {
    int n = 0;
    while (dirent* e = readdir(d))
      if (e->d_name[0] != '.') ++n;
    closedir(d);
    family(out, "process_open_fds", "gauge", "Number of open file descriptors.", n - 1);  // d's
  }
  if (rlimit r{}; getrlimit(RLIMIT_NOFILE, &r) == 0)
    family(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.",
           r.rlim_cur == RLIM_INFINITY ? HUGE_VAL : static_cast<double>(r.rlim_cur));
  return out;
}

std::function<void(std::string&)> throttled_collector(std::function<std::string()> render,
                                                      std::chrono::milliseconds min_interval) {
  struct State {
    std::mutex mu;
    std::string text;
    std::chrono::steady_clock::time_point next{};  // GUARDED_BY(mu)
  };
  auto state = std::make_shared<State>();
  return [state, render = std::move(render), min_interval](std::string& out) {
    // One scrape at a time runs the query; concurrent scrapes wait for it and share its text.
    std::lock_guard lock(state->mu);
    auto start = std::chrono::steady_clock::now();
    if (start >= state->next) {
      state->text = render();
      auto took = std::chrono::steady_clock::now() - start;
      state->next = start + std::max<std::chrono::steady_clock::duration>(min_interval, took * 100);
    }
    out += state->text;
  };
}

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double v) {
  std::lock_guard lock(mu_);
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += v;
}

void Histogram::render(const std::string& name, const std::string& labels, std::string& out) const {
  std::lock_guard lock(mu_);
  std::uint64_t cumulative = 0;
  std::string inner = labels.empty() ? "" : labels.substr(1, labels.size() - 2) + ",";
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += counts_[i];
    std::string le = i < bounds_.size() ? number(bounds_[i]) : "+Inf";
    out += name + "_bucket{" + inner + "le=\"" + le + "\"} " + std::to_string(cumulative) + "\n";
  }
  out += name + "_sum" + labels + " " + number(sum_) + "\n";
  out += name + "_count" + labels + " " + std::to_string(cumulative) + "\n";
}

std::string Metrics::render_labels(const Labels& labels) {
  if (labels.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < labels.size(); ++i) {
    if (i) out += ",";
    out += labels[i].first + "=\"" + escape_label(labels[i].second) + "\"";
  }
  return out + "}";
}

Counter& Metrics::counter(const std::string& name, const std::string& help, const Labels& labels) {
  std::lock_guard lock(mu_);
  Family& f = families_[name];
  f.type = "counter";
  f.help = help;
  auto& slot = f.counters[render_labels(labels)];
  if (!slot) slot = std::make_unique<Counter>();
  return *slot;
}

Gauge& Metrics::gauge(const std::string& name, const std::string& help, const Labels& labels) {
  std::lock_guard lock(mu_);
  Family& f = families_[name];
  f.type = "gauge";
  f.help = help;
  auto& slot = f.gauges[render_labels(labels)];
  if (!slot) slot = std::make_unique<Gauge>();
  return *slot;
}

Histogram& Metrics::histogram(const std::string& name, const std::string& help,
                              const std::vector<double>& bounds, const Labels& labels) {
  std::lock_guard lock(mu_);
  Family& f = families_[name];
  f.type = "histogram";
  f.help = help;
  auto& slot = f.histograms[render_labels(labels)];
  if (!slot) slot = std::make_unique<Histogram>(bounds);
  return *slot;
}

void Metrics::add_collector(std::function<void(std::string&)> collector) {
  std::lock_guard lock(mu_);
  collectors_.push_back(std::move(collector));
}

std::string Metrics::render() const {
  std::string out;
  std::vector<std::function<void(std::string&)>> collectors;
  {
    std::lock_guard lock(mu_);
    for (const auto& [name, f] : families_) {
      out += "# HELP " + name + " " + f.help + "\n# TYPE " + name + " " + f.type + "\n";
      for (const auto& [labels, c] : f.counters)
        out += name + labels + " " + std::to_string(c->value()) + "\n";
      for (const auto& [labels, g] : f.gauges)
        out += name + labels + " " + number(g->value()) + "\n";
      for (const auto& [labels, h] : f.histograms) h->render(name, labels, out);
    }
    collectors = collectors_;
  }
  // Collectors may query the journal: run them outside the lock.
  for (const auto& c : collectors) c(out);
  return out;
}

}  // namespace iarelay
