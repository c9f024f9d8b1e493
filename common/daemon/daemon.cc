#include "common/daemon/daemon.h"

#include <malloc.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <future>
#include <mutex>

#include "common/daemon/config.h"
#include "common/daemon/dashboard.h"
#include "common/daemon/sd_notify.h"
#include "common/daemon/start_up.h"
#include "common/obs/log.h"

#ifndef COILGUN_VERSION
#define COILGUN_VERSION "0.0.0"
#endif

namespace coilgun::daemon {

// ---- Metrics ------------------------------------------------------------------------------

namespace {
metrics::CounterFamily& link_family(metrics::Registry& r) {
  return r.counter("coilgun_link_bytes_total",
                   "Bytes on the tunnel's TCP sockets (TLS included), by direction", {"direction"});
}
metrics::CounterFamily& delta_family(metrics::Registry& r) {
  return r.counter("coilgun_delta_responses_total", "Responses by how their body crossed the link",
                   {"result"});
}

// The process's own figures, under the names every Prometheus client library uses.
void watch_process(metrics::Registry& r) {
  r.gauge_fn("process_resident_memory_bytes", "Resident memory size in bytes", [] {
    long pages = 0, resident = 0;
    std::FILE* f = std::fopen("/proc/self/statm", "r");
    if (f != nullptr) {
      if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
      std::fclose(f);
    }
    return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE));
  });
  r.counter_fn("process_cpu_seconds_total", "User and system CPU time spent, in seconds", [] {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    const auto seconds = [](const timeval& t) { return t.tv_sec + t.tv_usec / 1e6; };
    return seconds(u.ru_utime) + seconds(u.ru_stime);
  });
  r.gauge_fn("process_open_fds", "Open file descriptors", [] {
    std::error_code ec;
    double n = 0;
    for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
      ++n;
    }
    return n;
  });
  r.gauge_fn("process_max_fds", "The limit on open file descriptors", [] {
    rlimit l{};
    return getrlimit(RLIMIT_NOFILE, &l) == 0 ? static_cast<double>(l.rlim_cur) : 0.0;
  });
  const double started =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  r.gauge_fn("process_start_time_seconds", "Start time of the process since the Unix epoch",
             [started] { return started; });
}

}  // namespace

Metrics::Metrics(metrics::Registry& r, std::string_view daemon,
                 std::span<const char* const> error_reasons)
    : registry(r),
      body_bytes(r.counter("coilgun_body_bytes_total", "Response body bytes before link encoding")),
      link_in(link_family(r).with({"in"})),
      link_out(link_family(r).with({"out"})),
      delta_delta(delta_family(r).with({"delta"})),
      delta_full(delta_family(r).with({"full"})),
      delta_stream(delta_family(r).with({"stream"})),
      delta_direct(delta_family(r).with({"direct"})),
      tunnels(r.gauge("coilgun_tunnel_connections", "Tunnel connections up")),
      in_flight(r.gauge("coilgun_exchanges_in_flight", "Requests being answered now")),
      duration(r.histogram("coilgun_request_duration_seconds",
                           "Time from request head to the end of the response",
                           metrics::kLatencySecondsBuckets)),
      errors(r.counter("coilgun_errors_total", "Failed exchanges and connections, by reason",
                       {"reason"})),
      retries(r.counter("coilgun_retries_total",
                        "Requests sent again on another tunnel or agent after the first was lost "
                        "or refused before any answer")) {
  auto& requests =
      r.counter("coilgun_requests_total", "Requests answered, by status class", {"code"});
  static const char* kClasses[6] = {"other", "1xx", "2xx", "3xx", "4xx", "5xx"};
  for (int i = 0; i < 6; ++i) by_class_[i] = &requests.with({kClasses[i]});
  for (const char* reason : error_reasons) (void)errors.with({reason});
  r.gauge("coilgun_build_info", "Always 1: the daemon and its version", {"daemon", "version"})
      .with({daemon, COILGUN_VERSION})
      .set(1);
  watch_process(r);
}

void Metrics::request(int status, double seconds) {
  const int cls = status / 100;
  by_class_[(cls >= 1 && cls <= 5) ? cls : 0]->inc();
  duration.observe(seconds);
}

void Metrics::watch_store(VersionStore& store) {
  registry.gauge_fn("coilgun_store_bytes", "Bytes held by the version store",
                    [&store] { return static_cast<double>(store.stats().bytes); });
  registry.gauge_fn("coilgun_store_versions", "Versions held by the version store",
                    [&store] { return static_cast<double>(store.stats().versions); });
  registry.gauge_fn("coilgun_store_keys", "Cache keys with at least one version",
                    [&store] { return static_cast<double>(store.stats().keys); });
  // The shared tier's counts since start (callbacks into the store: gauges by type, but they
  // only grow, so rate() applies).
  auto& shared = registry.gauge_fn("coilgun_store_shared_events",
                                   "memcached tier events since start, by event (hit, error, "
                                   "corrupt, write, dropped)",
                                   {"event"});
  const std::pair<const char*, uint64_t VersionStoreStats::*> events[] = {
      {"hit", &VersionStoreStats::shared_hits},
      {"error", &VersionStoreStats::shared_errors},
      {"corrupt", &VersionStoreStats::shared_corrupt},
      {"write", &VersionStoreStats::shared_writes},
      {"dropped", &VersionStoreStats::shared_dropped}};
  for (const auto& event : events) {
    // Not a structured binding: clang 14 cannot capture one.
    const auto field = event.second;
    shared.set({event.first},
               [&store, field] { return static_cast<double>(store.stats().*field); });
  }
}

nlohmann::json store_json(const VersionStore& store) {
  const VersionStoreStats s = store.stats();
  return {{"keys", s.keys},
          {"versions", s.versions},
          {"bytes", s.bytes},
          {"hits", s.hits},
          {"misses", s.misses},
          {"inserts", s.inserts},
          {"evictions", s.evictions},
          {"rejects", s.rejects},
          {"shared",
           {{"hits", s.shared_hits},
            {"errors", s.shared_errors},
            {"corrupt", s.shared_corrupt},
            {"writes", s.shared_writes},
            {"dropped", s.shared_dropped}}}};
}

// ---- Workers ------------------------------------------------------------------------------

struct Daemon::WorkerThread {
  std::thread thread;
  std::mutex mutex;  // Guards |command| against the worker tearing it down.
  uv::Async* command = nullptr;
  std::atomic<int> request{0};        // 1: drain, 2: stop now.
  std::atomic<bool> reloaded{false};  // New settings: call Worker::reloaded().
  std::atomic<bool> exited{false};
};

namespace {
constexpr int kDrain = 1;
constexpr int kStop = 2;
}  // namespace

// ---- Admin --------------------------------------------------------------------------------

class Daemon::Admin : public http::Server {
 public:
  Admin(Daemon& d, uv::Loop& loop) : http::Server(loop, options(d)), d_(d) {}

  void on_request(http::ServerConnection& c) override {
    std::string_view path = c.request().target;
    path = path.substr(0, path.find('?'));
    if (c.request().method != "GET" && c.request().method != "HEAD") {
      return c.respond_simple(405, "method not allowed\n");
    }
    if (path == "/metrics") {
      return c.respond_simple(200, d_.registry_.render_prometheus(), false,
                              metrics::Registry::kPrometheusContentType);
    }
    if (path == "/stats")
      return c.respond_simple(200, stats().dump(2) + "\n", false, "application/json");
    if (path == "/healthz") return c.respond_simple(200, "ok\n");
    if (path == "/ready") {
      if (d_.draining_) return c.respond_simple(503, "draining\n");
      return d_.ready_() ? c.respond_simple(200, "ready\n") : c.respond_simple(503, "not ready\n");
    }
    if (path == "/stats/history") {
      return c.respond_simple(200, d_.history_.to_json() + "\n", false, "application/json");
    }
    if (path == "/") return dashboard(c);
    c.respond_simple(404, "not found\n");
  }

 private:
  // The dashboard: one self-contained page (common/daemon/dashboard.h). The policy header makes the
  // browser refuse anything but this page's own inline code and fetches to this listener.
  static void dashboard(http::ServerConnection& c) {
    http::ResponseHead head;
    head.status = 200;
    head.headers = {{"Content-Type", "text/html; charset=utf-8"},
                    {"Cache-Control", "no-store"},
                    {"Content-Security-Policy",
                     "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                     "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'"},
                    {"X-Content-Type-Options", "nosniff"}};
    if (!c.respond_head(std::move(head), http::ResponseFraming::kContentLength,
                        kDashboardHtml.size())
             .ok()) {
      return;
    }
    c.respond_body(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(kDashboardHtml.data()),
                                            kDashboardHtml.size()));
    c.respond_end();
  }

  static http::ServerOptions options(Daemon& d) {
    http::ServerOptions o;
    o.server_name = d.options_.name;
    o.idle_timeout = std::chrono::seconds(30);
    return o;
  }
  nlohmann::json stats() {
    nlohmann::json j = {
        {"daemon", d_.options_.name},
        {"version", COILGUN_VERSION},
        {"uptime_seconds",
         std::chrono::duration<double>(std::chrono::steady_clock::now() - d_.started_).count()},
        {"workers", d_.options_.workers},
        {"draining", d_.draining_.load()},
        {"ready", !d_.draining_ && d_.ready_()},
        {"metrics", d_.registry_.to_json()},
    };
    if (d_.stats_) {
      const nlohmann::json extra = d_.stats_();  // Named: items() must not outlive it.
      for (const auto& [k, v] : extra.items()) j[k] = v;
    }
    return j;
  }
  Daemon& d_;
};

// ---- Daemon -------------------------------------------------------------------------------

Daemon::Daemon(DaemonOptions options, metrics::Registry& registry, MakeWorker make, StatsFn stats,
               ReadyFn ready)
    : options_(std::move(options)),
      registry_(registry),
      make_(std::move(make)),
      stats_(std::move(stats)),
      ready_(std::move(ready)) {}

Daemon::~Daemon() {
  for (auto& w : workers_) {
    if (w->thread.joinable()) {
      w->request = kStop;
      {
        std::lock_guard<std::mutex> lock(w->mutex);
        if (w->command != nullptr) w->command->send();
      }
      w->thread.join();
    }
  }
}

Status logged_listen(Status s, const char* role, const std::string& host, uint16_t port) {
  if (!s.ok()) {
    const config::HostPort address{host, port};
    log::error("cannot listen",
               {{"role", role}, {"address", address.to_string()}, {"error", s.message()}});
  }
  return s;
}

void tune_malloc() {
  (void)mallopt(M_MMAP_THRESHOLD, 8 << 20);
  (void)mallopt(M_TRIM_THRESHOLD, 32 << 20);
}

int Daemon::run() {
  started_ = std::chrono::steady_clock::now();
  tune_malloc();
  std::signal(SIGPIPE, SIG_IGN);
  // Transparent huge pages inflate a proxy's RSS: with THP "always", khugepaged backs sparse
  // thread stacks and malloc arenas with 2 MiB pages, so memory grows with nothing held (the
  // advice databases such as Redis give too). Failure (an old kernel) changes nothing else.
  (void)prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
  uv::Async exited(loop_, [this] { worker_exited(); });

  // Start workers one by one: the first binds the configured port (maybe 0), the others the
  // port it got.
  uint16_t port = 0;
  for (unsigned i = 0; i < options_.workers; ++i) {
    auto w = std::make_unique<WorkerThread>();
    std::promise<Result<uint16_t>> started;
    auto started_future = started.get_future();
    WorkerThread* wt = w.get();
    w->thread = std::thread([this, wt, i, port, &started, &exited] {
      uv::Loop loop;
      {
        std::unique_ptr<Worker> worker = make_(loop, i);
        Result<uint16_t> r = worker->start(port);
        if (!r.ok()) {
          started.set_value(r);
          worker.reset();
          loop.close();
          wt->exited = true;
          exited.send();
          return;
        }
        uv::Timer watch(loop);
        uv::Async command(loop, [&] {
          if (wt->reloaded.exchange(false)) worker->reloaded();
          const int req = wt->request.load();
          if (req == kStop) {
            worker->stop();
            loop.stop();
          } else if (req == kDrain) {
            worker->drain();
            watch.start(
                std::chrono::milliseconds(0),
                [&] {
                  if (worker->drained()) {
                    worker->stop();
                    loop.stop();
                  }
                },
                std::chrono::milliseconds(20));
          }
        });
        {
          std::lock_guard<std::mutex> lock(wt->mutex);
          wt->command = &command;
        }
        started.set_value(r);
        loop.run();
        {
          std::lock_guard<std::mutex> lock(wt->mutex);
          wt->command = nullptr;
        }
        worker->stop();
      }
      loop.close();
      wt->exited = true;
      exited.send();
    });
    Result<uint16_t> r = started_future.get();
    workers_.push_back(std::move(w));
    if (!r.ok()) {
      log::error("worker failed to start",
                 {{"daemon", options_.name}, {"worker", i}, {"error", r.status().to_string()}});
      begin_drain();
      loop_.run();
      join_workers();  // Before |exited|, which they signal, goes away.
      return 1;
    }
    port = *r;
  }

  admin_ = std::make_unique<Admin>(*this, loop_);
  const Status s = logged_listen(admin_->listen(options_.admin_host, options_.admin_port), "admin",
                                 options_.admin_host, options_.admin_port);
  if (!s.ok()) {
    admin_.reset();
    begin_drain();
    loop_.run();
    join_workers();
    return 1;
  }
  log::info("listening", {{"role", "admin"}, {"address", admin_->address()}});

  uv::SignalWatcher term(loop_), intr(loop_);
  auto on_signal = [this](int signum) {
    if (!draining_) {
      log::info("draining",
                {{"signal", signum},
                 {"deadline_ms", static_cast<int64_t>(options_.drain_timeout.count())}});
      begin_drain();
      return;
    }
    log::warn("second signal: exiting now", {{"signal", signum}});
    std::_Exit(1);
  };
  // A signal that cannot be watched keeps its default action (no drain on SIGTERM, no reload on
  // SIGHUP): the operator hears of it once, at start.
  auto watched = [](const Status& started, const char* signal) {
    if (started.ok()) return;
    log::error("cannot watch a signal", {{"signal", signal}, {"error", started.to_string()}});
  };
  watched(term.start(SIGTERM, on_signal), "SIGTERM");
  watched(intr.start(SIGINT, on_signal), "SIGINT");
  uv::SignalWatcher hup(loop_), usr1(loop_);
  watched(hup.start(SIGHUP, [this](int) { reload(); }), "SIGHUP");
  auto on_usr1 = [](int) {
    const Status reopened = log::reopen();
    if (reopened.ok()) {
      log::info("log file reopened", {});
    } else {
      log::error("cannot reopen the log file: still writing the old one",
                 {{"error", reopened.to_string()}});
    }
  };
  watched(usr1.start(SIGUSR1, on_usr1), "SIGUSR1");
  uv::Timer deadline(loop_), status(loop_), history(loop_);
  sample_history();
  const std::chrono::milliseconds every(history_.interval_ms());
  history.start(
      every, [this] { sample_history(); }, every);
  deadline_ = &deadline;
  log::info(
      "started",
      {{"daemon", options_.name}, {"version", COILGUN_VERSION}, {"workers", options_.workers}});
  sd::notify("READY=1\n" + status_line());
  if (options_.status) {
    status.start(
        options_.status_interval, [this] { sd::notify(status_line()); }, options_.status_interval);
  }
  loop_.run();
  deadline_ = nullptr;
  admin_.reset();
  join_workers();
  log::info("stopped", {{"daemon", options_.name}});
  return 0;
}

void Daemon::join_workers() {
  for (auto& w : workers_) {
    if (w->thread.joinable()) w->thread.join();
  }
}

// Samples the totals the dashboard plots (history_sample()) into history_.
void Daemon::sample_history() {
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  HistorySample sample = history_sample(registry_.to_json(), now_ms);
  history_.push(std::move(sample.text));
  trim_when_idle(sample.requests, sample.in_flight);
}

void Daemon::trim_when_idle(double requests, double in_flight) {
  const bool idle = requests == last_requests_ && in_flight == 0;
  last_requests_ = requests;
  if (!idle) {
    trimmed_ = false;
  } else if (!trimmed_) {
    trimmed_ = true;
    (void)malloc_trim(0);
  }
}

std::string Daemon::status_line() const {
  return options_.status ? "STATUS=" + options_.status() : std::string();
}

void Daemon::reload() {
  if (draining_ || !options_.reload) return;
  sd::notify(sd::reloading_state());
  log::info("reloading", {{"daemon", options_.name}});
  if (options_.reload()) {
    log::info("reloaded", {{"daemon", options_.name}});
    for (auto& w : workers_) {
      std::lock_guard<std::mutex> lock(w->mutex);
      w->reloaded = true;
      if (w->command != nullptr) w->command->send();
    }
  } else {
    log::error("reload failed: keeping the running configuration", {{"daemon", options_.name}});
  }
  sd::notify("READY=1\n" + status_line());
}

void Daemon::begin_drain() {
  if (!draining_) sd::notify("STOPPING=1\nSTATUS=draining");
  draining_ = true;
  for (auto& w : workers_) {
    w->request = kDrain;
    std::lock_guard<std::mutex> lock(w->mutex);
    if (w->command != nullptr) w->command->send();
  }
  if (deadline_ != nullptr) {
    deadline_->start(options_.drain_timeout, [this] {
      log::warn("drain deadline passed: closing what is left", {});
      for (auto& w : workers_) {
        w->request = kStop;
        std::lock_guard<std::mutex> lock(w->mutex);
        if (w->command != nullptr) w->command->send();
      }
    });
  }
  worker_exited();  // Nothing to wait for if no worker is running.
}

void Daemon::worker_exited() {
  for (auto& w : workers_) {
    if (!w->exited) return;
  }
  if (!draining_ && !workers_.empty()) {
    log::error("every worker stopped", {{"daemon", options_.name}});
  }
  if (admin_) admin_->close_all();
  admin_.reset();
  loop_.stop();
}

}  // namespace coilgun::daemon

namespace coilgun::daemon {

bool apply_log(const config::LogConfig& log, const config::LogConfig* before, std::string* error) {
  if (before == nullptr || log.file != before->file) {
    if (log.file.empty()) {
      log::set_sink_stderr();
    } else if (Status s = log::set_sink_file(log.file); !s.ok()) {
      *error = "log.file: " + s.to_string();
      return false;
    }
  }
  log::set_level(log.level);
  log::set_access_enabled(log.access);
  return true;
}

}  // namespace coilgun::daemon
