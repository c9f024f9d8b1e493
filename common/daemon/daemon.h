#pragma once
// What both daemons share around their own logic: worker threads with one loop each, the
// admin listener, signals, drain and the metrics every daemon publishes.
//
//   main thread: signals (SIGTERM/SIGINT: drain, a second one exits at once; SIGHUP: reload
//                configuration and certificates; SIGUSR1: reopen the log file), the admin
//                HTTP listener (/metrics /stats /ready /healthz), systemd notifications
//                (READY, STATUS, RELOADING, STOPPING: common/daemon/sd_notify.h), waiting for the
//                workers;
//   worker i:    its own uv::Loop and Worker object (listeners, connections, exchanges).
//
// The metrics registry and the version store are shared by all threads (they are thread-safe);
// everything else belongs to one worker.

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "common/daemon/stats_history.h"
#include "common/http/server.h"
#include "common/net/loop.h"
#include "common/obs/metrics.h"
#include "common/store/version_store.h"

namespace coilgun::daemon {

// The metrics every daemon publishes (names and labels: deploy/METRICS.md).
class Metrics {
 public:
  // Registers them in |registry| with coilgun_build_info for |daemon| ("coilgun-edge"), the
  // process's own figures (process_*), and coilgun_errors_total at zero for each of
  // |error_reasons|, so that a rate is defined before the first error.
  explicit Metrics(metrics::Registry& registry, std::string_view daemon = "coilgun",
                   std::span<const char* const> error_reasons = {});

  // Counts a finished request by status class and observes its duration.
  void request(int status, double seconds);
  // Registers the store's figures as gauges read at render time.
  void watch_store(VersionStore& store);
  // Counts bytes a tunnel connection read (|in|) and wrote (|out|).
  void link_bytes(uint64_t in, uint64_t out) {
    link_in.inc(in);
    link_out.inc(out);
  }

  metrics::Registry& registry;
  metrics::Counter& body_bytes;    // coilgun_body_bytes_total
  metrics::Counter& link_in;       // coilgun_link_bytes_total{direction="in"}
  metrics::Counter& link_out;      // coilgun_link_bytes_total{direction="out"}
  metrics::Counter& delta_delta;   // coilgun_delta_responses_total{result="delta"}
  metrics::Counter& delta_full;    // ...{result="full"}
  metrics::Counter& delta_stream;  // ...{result="stream"}
  metrics::Counter& delta_direct;  // ...{result="direct"}: the edge's fallback, no link.
  metrics::Gauge& tunnels;         // coilgun_tunnel_connections
  metrics::Gauge& in_flight;       // coilgun_exchanges_in_flight
  metrics::Histogram& duration;    // coilgun_request_duration_seconds
  metrics::CounterFamily& errors;  // coilgun_errors_total{reason}
  metrics::Counter& retries;       // coilgun_retries_total (edge: sent again to another tunnel)

 private:
  metrics::Counter* by_class_[6];  // coilgun_requests_total{code="1xx".."5xx"}, [0] other
};

// Seconds from |t| to now, for durations in metrics and access lines.
inline double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// The version store's figures as a /stats member.
nlohmann::json store_json(const VersionStore& store);

// Tells glibc's allocator to keep freed memory for reuse (up to 32 MiB at the top of each
// arena: never more than the process once used) and to serve blocks up to 8 MiB from its
// arenas. Its defaults give a freed 128 KiB back to the kernel at once and mmap() larger
// blocks, so a process that allocates and frees a 100 KB body for every response pays a
// madvise() and a fault for every page, zeroed, on each: a fifth of the edge's CPU in the
// 100 KB benchmark (perf, tests/bench/RESULTS.md); at 8 MiB, 32 clients of 400 KB pages still
// made the heap shrink and grow. The daemon gives it back once idle for a second
// (Daemon::trim_when_idle). Call it before the first thread starts.
void tune_malloc();

// How a worker's main listener shares its address: the first worker (no |port_override|)
// binds alone, so a second copy of the daemon, or any program on the address, makes it fail;
// the others then join it (uv::PortSharing).
inline uv::PortSharing worker_sharing(uint16_t port_override) {
  return port_override == 0 ? uv::PortSharing::kFirst : uv::PortSharing::kJoin;
}

// Logs "cannot listen" naming |role|, the address and the OS's error when |s| failed.
// Returns |s|.
Status logged_listen(Status s, const char* role, const std::string& host, uint16_t port);

// One worker's logic; created, used and destroyed on its own thread.
class Worker {
 public:
  virtual ~Worker() = default;
  // Binds listeners. |port_override| (when nonzero) replaces the configured port of the main
  // listener: the first worker binds the configured one (maybe 0, any), the others then bind
  // the port it got (worker_sharing). Returns the bound port of the main listener.
  virtual Result<uint16_t> start(uint16_t port_override) = 0;
  // Stops accepting new work; what is in flight goes on. drained() reports when it is done.
  virtual void drain() = 0;
  virtual bool drained() const = 0;
  // Closes everything now (the drain deadline passed).
  virtual void stop() = 0;
  // A SIGHUP published new settings (on the worker's own thread, after the fact): for work
  // that should start at once rather than with the next request.
  virtual void reloaded() {}
};

struct DaemonOptions {
  std::string name;  // "coilgun-edge" / "coilgun-origin", for logs.
  unsigned workers = 1;
  std::string admin_host = "127.0.0.1";
  uint16_t admin_port = 0;
  std::chrono::milliseconds drain_timeout{10000};
  // The STATUS= line for systemd (tunnel state, live ratio), sent at start, after a reload and
  // every status_interval. Main thread. Null: no STATUS.
  std::function<std::string()> status;
  std::chrono::milliseconds status_interval{5000};
  // SIGHUP: reload configuration and certificates. It validates everything first; on failure it
  // keeps the old ones, logs why and returns false. Main thread. Null: SIGHUP is ignored.
  std::function<bool()> reload;
};

class Daemon {
 public:
  using MakeWorker = std::function<std::unique_ptr<Worker>(uv::Loop& loop, unsigned index)>;
  // Extra /stats members, called on the main thread.
  using StatsFn = std::function<nlohmann::json()>;
  // Whether the daemon can serve now (before draining): /ready is 200 only when true.
  using ReadyFn = std::function<bool()>;

  Daemon(DaemonOptions options, metrics::Registry& registry, MakeWorker make, StatsFn stats,
         ReadyFn ready);
  ~Daemon();

  // Starts the workers and the admin listener, logs where they listen, and runs until every
  // worker stopped (after a drain, or a failure). Returns the process exit code.
  int run();

 private:
  struct WorkerThread;
  class Admin;
  void sample_history();
  // Gives memory tune_malloc() kept for reuse back to the kernel once a whole second passed
  // with no request finished and none in flight: never under load, where reuse is the point;
  // once per idle spell.
  void trim_when_idle(double requests, double in_flight);
  void begin_drain();
  void reload();
  std::string status_line() const;
  void worker_exited();
  void join_workers();

  DaemonOptions options_;
  metrics::Registry& registry_;
  MakeWorker make_;
  StatsFn stats_;
  ReadyFn ready_;
  uv::Loop loop_;
  std::vector<std::unique_ptr<WorkerThread>> workers_;
  std::unique_ptr<Admin> admin_;
  std::atomic<bool> draining_{false};
  std::chrono::steady_clock::time_point started_;
  uv::Timer* deadline_ = nullptr;  // The drain deadline, while run() runs.
  // The dashboard's history (/stats/history): one sample of the totals per second, the last
  // kHistorySamples (15 minutes) of them. Main thread only.
  static constexpr size_t kHistorySamples = 900;
  StatsHistory history_{kHistorySamples, 1000};
  double last_requests_ = -1;
  bool trimmed_ = false;
};

}  // namespace coilgun::daemon
