// coilgun-origin: the agent beside the web server. Parses the configuration and wires the
// objects together; the logic lives in agent.cc.

#include <cstdio>
#include <thread>

#include "common/config.h"
#include "common/daemon.h"
#include "common/daemon_main.h"
#include "common/log.h"
#include "common/tls.h"
#include "common/version_store.h"
#include "origin/agent.h"

extern char** environ;

using namespace coilgun;

namespace {

// Keys a SIGHUP cannot apply: listeners, threads, the store and the backend pool are set up
// once. (TLS files, delta, namespace, limits, tunnel and timeouts apply to new work at once.)
std::vector<std::string> restart_only(const config::OriginConfig& a,
                                      const config::OriginConfig& b) {
  std::vector<std::string> keys;
  if (!(a.listen == b.listen)) keys.push_back("listen");
  if (!(a.admin == b.admin)) keys.push_back("admin");
  if (a.workers != b.workers) keys.push_back("workers");
  if (!(a.store == b.store)) keys.push_back("store");
  if (!(a.backend == b.backend)) keys.push_back("backend");
  if (a.backend_pool.max_idle_per_worker != b.backend_pool.max_idle_per_worker ||
      a.backend_pool.connect_timeout != b.backend_pool.connect_timeout) {
    keys.push_back("backend_pool");
  }
  if (a.limits.max_header_bytes != b.limits.max_header_bytes) {
    keys.push_back("limits.max_header_bytes");
  }
  return keys;
}

std::string status(const origin::Shared& shared) {
  const auto tunnels = shared.metrics.tunnels.value();
  char text[160];
  std::snprintf(text, sizeof text, "%lld edge tunnel%s, backend %s",
                static_cast<long long>(tunnels), tunnels == 1 ? "" : "s",
                shared.now()->config.backend.to_string().c_str());
  return text;
}

}  // namespace

int main(int argc, char** argv) {
  auto env = [] { return config::environment_from(environ); };
  int exit_code = 0;
  auto settings = daemon::start_up("coilgun-origin", &config::load_origin, tls::Role::kServer, argc,
                                   argv, env(), &exit_code);
  if (settings == nullptr) return exit_code;
  const config::OriginConfig& cfg = settings->config;

  metrics::Registry registry;
  daemon::Metrics metrics(registry);
  MemoryVersionStore store(MemoryVersionStoreOptions{
      .max_versions_per_key = cfg.store.versions_per_key,
      .max_bytes = cfg.store.max_bytes,
      .prepare_on_lookup = true});  // The agent looks versions up only to use them as bases.
  metrics.watch_store(store);
  daemon::Reloadable<origin::Settings> current(settings);
  origin::Shared shared{current, store, metrics, {}, log::ReportLimiter()};

  daemon::DaemonOptions opts;
  opts.name = "coilgun-origin";
  opts.workers = config::resolve_workers(cfg.workers, std::thread::hardware_concurrency());
  opts.admin_host = cfg.admin.host;
  opts.admin_port = cfg.admin.port;
  opts.drain_timeout = cfg.drain_timeout;
  opts.status = [&shared] { return status(shared); };
  opts.reload = daemon::reloader<config::OriginConfig>(&config::load_origin, tls::Role::kServer,
                                                       argc, argv, env, current, restart_only);
  daemon::Daemon d(
      opts, registry,
      [&shared](uv::Loop& loop, unsigned index) {
        return std::make_unique<origin::AgentWorker>(loop, shared, index);
      },
      [&shared, &store] {
        const auto now = shared.now();
        return nlohmann::json{{"backend", now->config.backend.to_string()},
                              {"namespace", now->config.namespace_name},
                              {"tunnels", shared.metrics.tunnels.value()},
                              {"store", daemon::store_json(store)}};
      },
      [] { return true; });
  return d.run();
}
