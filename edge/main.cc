// coilgun-edge: serves clients and tunnels to origin agents. Parses the configuration and
// wires the objects together; the logic lives in edge.cc.

#include <cstdio>
#include <ctime>
#include <thread>

#include "common/config.h"
#include "common/daemon.h"
#include "common/log.h"
#include "common/tls.h"
#include "common/version_store.h"
#include "edge/edge.h"

extern char** environ;

using namespace coilgun;

int main(int argc, char** argv) {
  const config::EnvMap env = config::environment_from(environ);
  auto inv = config::load_edge(argc, argv, env);
  if (!inv.ok()) {
    std::fprintf(stderr, "coilgun-edge: %s\n", inv.error().c_str());
    return 2;
  }
  if (inv->help) {
    std::fputs(inv->help_text.c_str(), stdout);
    return 0;
  }
  if (inv->version) {
    std::printf("coilgun-edge %s\n", COILGUN_VERSION);
    return 0;
  }
  const config::EdgeConfig& cfg = inv->config;
  log::set_level(static_cast<log::Level>(cfg.log.level));
  log::set_access_enabled(cfg.log.access);
  for (const std::string& w : inv->warnings) log::warn("configuration", {{"warning", w}});

  const tls::TlsFiles files{cfg.tls.ca, cfg.tls.cert, cfg.tls.key};
  std::string detail;
  if (auto files_ok = config::check_files(cfg.tls); !files_ok.ok()) {
    std::fprintf(stderr, "coilgun-edge: %s\n", files_ok.error().c_str());
    return 1;
  }
  auto tls = tls::TlsContext::client(files, &detail);
  if (!tls.ok()) {
    std::fprintf(stderr, "coilgun-edge: TLS: %s\n", detail.c_str());
    return 1;
  }
  if (inv->check) {
    if (!tls::check_files(files, tls::Role::kClient, std::time(nullptr), &detail).ok()) {
      std::fprintf(stderr, "coilgun-edge: TLS: %s\n", detail.c_str());
      return 1;
    }
    std::printf("coilgun-edge: configuration OK (%s)\n",
                inv->config_path.empty() ? "no file" : inv->config_path.c_str());
    return 0;
  }

  metrics::Registry registry;
  daemon::Metrics metrics(registry);
  MemoryVersionStore store(MemoryVersionStoreOptions{
      .max_versions_per_key = cfg.store.versions_per_key,
      .max_bytes = cfg.store.max_bytes,
      .prepare_on_lookup = false});  // The edge decodes against bases; it never encodes.
  metrics.watch_store(store);
  edge::Shared shared{cfg, tls.value(), store, metrics};

  daemon::DaemonOptions opts;
  opts.name = "coilgun-edge";
  opts.workers = config::resolve_workers(cfg.workers, std::thread::hardware_concurrency());
  opts.admin_host = cfg.admin.host;
  opts.admin_port = cfg.admin.port;
  opts.drain_timeout = cfg.drain_timeout;
  daemon::Daemon d(
      opts, registry,
      [&shared](uv::Loop& loop, unsigned index) {
        return std::make_unique<edge::EdgeWorker>(loop, shared, index);
      },
      [&store, &metrics] {
        const double body = static_cast<double>(metrics.body_bytes.value());
        const double link = static_cast<double>(metrics.link_in.value());
        return nlohmann::json{{"tunnels", metrics.tunnels.value()},
                              {"body_bytes", metrics.body_bytes.value()},
                              {"link_bytes_in", metrics.link_in.value()},
                              {"link_bytes_out", metrics.link_out.value()},
                              {"link_over_body", body > 0 ? link / body : 0.0},
                              {"store", daemon::store_json(store)}};
      },
      [&metrics] { return metrics.tunnels.value() > 0; });
  return d.run();
}
