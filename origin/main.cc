// coilgun-origin: the agent beside the web server. Parses the configuration and wires the
// objects together; the logic lives in worker.cc, edge_link.cc, exchange.cc and
// base_policy.cc.

#include <cstdio>

#include "common/daemon/daemon.h"
#include "common/daemon/start_up.h"
#include "common/obs/log.h"
#include "common/store/version_store.h"
#include "common/tls/tls.h"
#include "origin/config.h"
#include "origin/worker.h"

extern char** environ;

using namespace coilgun;

namespace {

// Keys a SIGHUP cannot apply: those both daemons set up once, and the backend pool. (TLS
// files, delta, namespace, limits, tunnel and timeouts apply to new work at once.)
std::vector<std::string> restart_only(const config::OriginConfig& a,
                                      const config::OriginConfig& b) {
  std::vector<std::string> keys = daemon::restart_only_common(a, b);
  if (!(a.backend == b.backend)) keys.push_back("backend");
  if (a.backend_health.path != b.backend_health.path) keys.push_back("backend_health.path");
  if (a.backend_pool.max_idle_per_worker != b.backend_pool.max_idle_per_worker ||
      a.backend_pool.connect_timeout != b.backend_pool.connect_timeout) {
    keys.push_back("backend_pool");
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
  // Every coilgun_errors_total reason the agent counts (deploy/METRICS.md lists them).
  static constexpr const char* kErrorReasons[] = {"backend_refused",
                                                  "backend_timeout",
                                                  "backend_failed",
                                                  "bad_response_fields",
                                                  "bad_content_length",
                                                  "encode_failed",
                                                  "stream_gone",
                                                  "client_gone",
                                                  "tunnel_lost",
                                                  "tunnel_handshake",
                                                  "tunnel_handshake_limit",
                                                  "request_without_method_or_path"};
  daemon::Metrics metrics(registry, "coilgun-origin", kErrorReasons);
  // The agent looks versions up only to use them as bases.
  const std::unique_ptr<VersionStore> owned_store = make_version_store(daemon::store_options(
      cfg.store, "origin/" + cfg.namespace_name, settings->memcached_password));
  VersionStore& store = *owned_store;
  metrics.watch_store(store);
  daemon::Reloadable<origin::Settings> current(settings);
  origin::Shared shared{current, store, metrics, {}, log::ReportLimiter(), {}, {}};
  if (!cfg.backend_health.path.empty()) {
    registry.gauge_fn(
        "coilgun_backend_up", "1 while the last [backend_health] check of the backend succeeded",
        [&shared] {
          return shared.backend_health.state() == origin::HealthState::State::kUp ? 1.0 : 0.0;
        });
  }

  daemon::DaemonOptions opts = daemon::daemon_options("coilgun-origin", cfg);
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
                              {"backend_health", shared.backend_health.to_json()},
                              {"namespace", now->config.namespace_name},
                              {"tunnels", shared.metrics.tunnels.value()},
                              {"store", daemon::store_json(store)}};
      },
      [&shared] { return shared.backend_health.ready(); });
  return d.run();
}
