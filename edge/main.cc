// coilgun-edge: serves clients and tunnels to origin agents. Parses the configuration and
// wires the objects together; the logic lives in worker.cc, agent_pool.cc and
// client_exchange.cc.

#include <cstdio>

#include "common/daemon/daemon.h"
#include "common/daemon/start_up.h"
#include "common/obs/log.h"
#include "common/store/version_store.h"
#include "common/tls/tls.h"
#include "edge/config.h"
#include "edge/worker.h"

extern char** environ;

using namespace coilgun;

namespace {

// Keys a SIGHUP cannot apply: those both daemons set up once, the client idle timeout and the
// number of tunnels per agent. (Routes, TLS files, other tunnel keys and limits apply to new
// work at once; an agent no route names any more keeps its tunnels until a restart.)
std::vector<std::string> restart_only(const config::EdgeConfig& a, const config::EdgeConfig& b) {
  std::vector<std::string> keys = daemon::restart_only_common(a, b);
  // The client listener's options are set when a worker starts.
  if (a.limits.client_idle_timeout != b.limits.client_idle_timeout) {
    keys.push_back("limits.client_idle_timeout");
  }
  if (a.limits.client_header_timeout != b.limits.client_header_timeout) {
    keys.push_back("limits.client_header_timeout");
  }
  if (a.limits.client_body_timeout != b.limits.client_body_timeout) {
    keys.push_back("limits.client_body_timeout");
  }
  if (a.limits.max_client_connections != b.limits.max_client_connections) {
    keys.push_back("limits.max_client_connections");
  }
  // A reload's new routes connect at once; agents already connected keep their tunnels.
  if (a.tunnel.connections != b.tunnel.connections) keys.push_back("tunnel.connections");
  if (a.per_agent_metrics != b.per_agent_metrics) keys.push_back("metrics.per_agent");
  return keys;
}

// Tunnel bytes in over body bytes served, so far.
// /stats lists at most this many agents (those down first); it counts them all.
constexpr size_t kAgentsListed = 100;

double link_over_body(const daemon::Metrics& m) {
  const double body = static_cast<double>(m.body_bytes.value());
  return body > 0 ? static_cast<double>(m.link_in.value()) / body : 0.0;
}

std::string status(const edge::Shared& shared) {
  const auto tunnels = shared.metrics.tunnels.value();
  char text[128];
  std::snprintf(text, sizeof text, "%lld tunnel%s up, link/body %.2f%%",
                static_cast<long long>(tunnels), tunnels == 1 ? "" : "s",
                100 * link_over_body(shared.metrics));
  return text;
}

}  // namespace

int main(int argc, char** argv) {
  auto env = [] { return config::environment_from(environ); };
  int exit_code = 0;
  auto settings = daemon::start_up("coilgun-edge", &config::load_edge, tls::Role::kClient, argc,
                                   argv, env(), &exit_code);
  if (settings == nullptr) return exit_code;
  const config::EdgeConfig& cfg = settings->config;

  metrics::Registry registry;
  // Every coilgun_errors_total reason the edge counts (deploy/METRICS.md lists them).
  static constexpr const char* kErrorReasons[] = {"tunnel_down",
                                                  "tunnel_lost",
                                                  "tunnel_busy",
                                                  "request_timeout",
                                                  "backend_timeout",
                                                  "backend_refused",
                                                  "backend_failed",
                                                  "unknown_host",
                                                  "no_host",
                                                  "bad_target",
                                                  "request_fields_over_limit",
                                                  "bad_response_fields",
                                                  "coded_body_over_limit",
                                                  "malformed_payload",
                                                  "refetch",
                                                  "verify_failed",
                                                  "stream_reset",
                                                  "bad_upgrade",
                                                  "direct_failed",
                                                  "client_gone",
                                                  "client_connection_limit"};
  daemon::Metrics metrics(registry, "coilgun-edge", kErrorReasons);
  // The edge decodes against bases; it never encodes.
  const std::unique_ptr<VersionStore> owned_store =
      make_version_store(daemon::store_options(cfg.store, "edge", settings->memcached_password));
  VersionStore& store = *owned_store;
  metrics.watch_store(store);
  daemon::Reloadable<edge::Settings> current(settings);
  edge::Shared shared{current, store, metrics, {}, {}, {}};

  daemon::DaemonOptions opts = daemon::daemon_options("coilgun-edge", cfg);
  shared.workers = opts.workers;
  if (cfg.per_agent_metrics) {
    shared.agents.export_to(
        &registry.gauge_fn("coilgun_agent_tunnels", "Tunnel connections up, per agent", {"agent"}),
        &registry.gauge_fn("coilgun_agent_rtt_seconds",
                           "Round trip of the last ping answered, per agent (0: none yet)",
                           {"agent"}));
  }
  opts.status = [&shared] { return status(shared); };
  opts.reload = daemon::reloader<config::EdgeConfig>(&config::load_edge, tls::Role::kClient, argc,
                                                     argv, env, current, restart_only);
  daemon::Daemon d(
      opts, registry,
      [&shared](uv::Loop& loop, unsigned index) {
        return std::make_unique<edge::EdgeWorker>(loop, shared, index);
      },
      [&store, &metrics, &shared] {
        return nlohmann::json{{"tunnels", metrics.tunnels.value()},
                              {"agents", shared.agents.to_json(kAgentsListed)},
                              {"body_bytes", metrics.body_bytes.value()},
                              {"link_bytes_in", metrics.link_in.value()},
                              {"link_bytes_out", metrics.link_out.value()},
                              {"link_over_body", link_over_body(metrics)},
                              {"store", daemon::store_json(store)}};
      },
      [&shared, workers = opts.workers] { return shared.workers_ready.load() == workers; });
  return d.run();
}
