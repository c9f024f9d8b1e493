// coilgun-origin: the agent beside the web server. Parses the configuration and wires the
// objects together; the logic lives in agent.cc.

#include <cstdio>
#include <ctime>
#include <thread>

#include "common/config.h"
#include "common/daemon.h"
#include "common/log.h"
#include "common/tls.h"
#include "common/version_store.h"
#include "origin/agent.h"

extern char** environ;

using namespace coilgun;

int main(int argc, char** argv) {
  const config::EnvMap env = config::environment_from(environ);
  auto inv = config::load_origin(argc, argv, env);
  if (!inv.ok()) {
    std::fprintf(stderr, "coilgun-origin: %s\n", inv.error().c_str());
    return 2;
  }
  if (inv->help) {
    std::fputs(inv->help_text.c_str(), stdout);
    return 0;
  }
  if (inv->version) {
    std::printf("coilgun-origin %s\n", COILGUN_VERSION);
    return 0;
  }
  const config::OriginConfig& cfg = inv->config;
  log::set_level(static_cast<log::Level>(cfg.log.level));
  log::set_access_enabled(cfg.log.access);
  for (const std::string& w : inv->warnings) log::warn("configuration", {{"warning", w}});

  const tls::TlsFiles files{cfg.tls.ca, cfg.tls.cert, cfg.tls.key};
  std::string detail;
  if (auto files_ok = config::check_files(cfg.tls); !files_ok.ok()) {
    std::fprintf(stderr, "coilgun-origin: %s\n", files_ok.error().c_str());
    return 1;
  }
  auto tls = tls::TlsContext::server(files, &detail);
  if (!tls.ok()) {
    std::fprintf(stderr, "coilgun-origin: TLS: %s\n", detail.c_str());
    return 1;
  }
  if (inv->check) {
    if (!tls::check_files(files, tls::Role::kServer, std::time(nullptr), &detail).ok()) {
      std::fprintf(stderr, "coilgun-origin: TLS: %s\n", detail.c_str());
      return 1;
    }
    std::printf("coilgun-origin: configuration OK (%s)\n",
                inv->config_path.empty() ? "no file" : inv->config_path.c_str());
    return 0;
  }

  metrics::Registry registry;
  daemon::Metrics metrics(registry);
  MemoryVersionStore store(MemoryVersionStoreOptions{
      .max_versions_per_key = cfg.store.versions_per_key,
      .max_bytes = cfg.store.max_bytes,
      .prepare_on_lookup = true});  // The agent looks versions up only to use them as bases.
  metrics.watch_store(store);
  origin::Shared shared{cfg, tls.value(), store, metrics};

  daemon::DaemonOptions opts;
  opts.name = "coilgun-origin";
  opts.workers = config::resolve_workers(cfg.workers, std::thread::hardware_concurrency());
  opts.admin_host = cfg.admin.host;
  opts.admin_port = cfg.admin.port;
  opts.drain_timeout = cfg.drain_timeout;
  daemon::Daemon d(
      opts, registry,
      [&shared](uv::Loop& loop, unsigned index) {
        return std::make_unique<origin::AgentWorker>(loop, shared, index);
      },
      [&store, &cfg] {
        return nlohmann::json{{"backend", cfg.backend.to_string()},
                              {"namespace", cfg.namespace_name},
                              {"store", daemon::store_json(store)}};
      },
      [] { return true; });
  return d.run();
}
