#pragma once
// What the two daemons' main() share: loading the configuration and the TLS context into one
// immutable Settings snapshot, the one-shot modes (--help, --version, --print-config, --check),
// applying [log], and SIGHUP reload (a new snapshot, validated before it replaces the old).
//
// The snapshot itself, which the workers read, is in settings.h.

#include <atomic>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/daemon/config.h"
#include "common/daemon/daemon.h"
#include "common/daemon/settings.h"
#include "common/obs/log.h"
#include "common/tls/tls.h"

namespace coilgun::daemon {

template <typename Config>
using LoadFn = config::ConfigResult<config::Invocation<Config>> (*)(int, const char* const*,
                                                                    const config::EnvMap&);

// Loads |argv|'s configuration (file, environment, flags) and builds its TLS context for
// |role|. On failure returns null and sets |error| (for stderr or the log). |inv| receives the
// invocation (one-shot modes, warnings) when not null.
template <typename Config>
std::shared_ptr<const Settings<Config>> load_settings(LoadFn<Config> load, tls::Role role, int argc,
                                                      const char* const* argv,
                                                      const config::EnvMap& env, std::string* error,
                                                      config::Invocation<Config>* inv = nullptr) {
  auto loaded = load(argc, argv, env);
  if (!loaded.ok()) {
    *error = loaded.error().message;
    return nullptr;
  }
  if (inv != nullptr) *inv = *loaded;
  if (loaded->help || loaded->version || loaded->print_config) {
    return std::make_shared<const Settings<Config>>(Settings<Config>{loaded->config, nullptr});
  }
  auto password = config::memcached_password(loaded->config.store);
  if (!password.ok()) {
    *error = password.error().message;
    return nullptr;
  }
  const config::TlsConfig& t = loaded->config.tls;
  if (auto files_ok = config::check_files(t); !files_ok.ok()) {
    *error = files_ok.error().message;
    return nullptr;
  }
  std::string detail;
  auto ctx = role == tls::Role::kServer ? tls::TlsContext::server(t, &detail)
                                        : tls::TlsContext::client(t, &detail);
  // An expired or not yet valid certificate is refused at start and on reload, not only by
  // --check: every peer would refuse it (issue #10: an edge so refused retried 25 times a
  // second).
  if (!ctx.ok() || !tls::check_validity(**ctx, t.cert, std::time(nullptr), &detail).ok()) {
    *error = "TLS: " + detail;
    return nullptr;
  }
  std::shared_ptr<const tls::TlsContext> web;
  if constexpr (requires { loaded->config.fallback_ca; }) {
    if (https_fallback(loaded->config)) {  // Found by ADL: edge/config.h.
      auto w = tls::TlsContext::web_client(loaded->config.fallback_ca, &detail);
      if (!w.ok()) {
        *error = "fallback_ca: " + detail;
        return nullptr;
      }
      web = std::move(w).value();
    }
  }
  if constexpr (requires { loaded->config.backend_tls; }) {
    const auto& b = loaded->config.backend_tls;
    if (loaded->config.backend.https) {
      auto w = tls::TlsContext::web_client(b.ca, &detail, b.cert, b.key);
      if (!w.ok()) {
        *error = "backend_tls: " + detail;
        return nullptr;
      }
      web = std::move(w).value();
    }
  }
  return std::make_shared<const Settings<Config>>(
      Settings<Config>{std::move(loaded->config), std::move(ctx).value(), std::move(web),
                       std::move(password).value()});
}

// Applies [log]: level, access log, file (opened, or reopened when |before| named another).
// Returns false with |error| when the file cannot be opened (the old sink stays).
bool apply_log(const config::LogConfig& log, const config::LogConfig* before, std::string* error);

// The version store [store] configures. |scope| names whose versions they are in the shared
// tier: daemons with the same scope share what they store (every edge "edge"; agents by their
// namespace).
inline VersionStoreOptions store_options(const config::StoreConfig& s, std::string scope,
                                         std::string memcached_password) {
  VersionStoreOptions o;
  o.max_versions_per_key = s.versions_per_key;
  o.max_bytes = s.max_bytes;
  for (const config::HostPort& a : s.memcached) o.memcached.push_back({a.host, a.port});
  o.memcached_timeout = s.memcached_timeout;
  o.memcached_retry = s.memcached_retry;
  o.memcached_index_fresh = s.memcached_index_fresh;
  o.memcached_max_item = s.memcached_max_item;
  o.memcached_username = s.memcached_username;
  o.memcached_password = std::move(memcached_password);
  o.scope = std::move(scope);
  return o;
}

// The one-shot modes. Returns the exit code when |inv| asked for one of them, else -1.
template <typename Config>
int one_shot(const char* program, const config::Invocation<Config>& inv,
             const Settings<Config>& settings) {
  if (inv.help) {
    std::fputs(inv.help_text.c_str(), stdout);
    return 0;
  }
  if (inv.version) {
    std::printf("%s %s\n", program, COILGUN_VERSION);
    return 0;
  }
  if (inv.print_config) {
    std::fputs(to_toml(inv.config).c_str(), stdout);  // Found by ADL: edge/ or origin/config.h.
    return 0;
  }
  if (inv.check) {
    std::printf("%s: configuration OK (%s)\n", program,
                inv.config_path.empty() ? "no file" : inv.config_path.c_str());
    // What a start would log as a warning: a misspelt COILGUN_* variable, for one.
    for (const std::string& w : inv.warnings) std::printf("%s: warning: %s\n", program, w.c_str());
    // Not a configuration error: the daemon runs from memory while memcached does not answer.
    for (const auto& [server, why] :
         probe_memcached(store_options(inv.config.store, "", settings.memcached_password))) {
      if (why.empty()) {
        std::printf("%s: memcached %s answers\n", program, server.c_str());
      } else {
        std::printf("%s: warning: memcached %s does not answer: %s\n", program, server.c_str(),
                    why.c_str());
      }
    }
    return 0;
  }
  return -1;
}

// Start-up before the daemon runs: loads the settings (errors to stderr), runs the one-shot
// modes, applies [log] and logs configuration warnings. Returns the settings to run with, or
// null with |exit_code| set: the process should exit with it.
template <typename Config>
std::shared_ptr<const Settings<Config>> start_up(const char* program, LoadFn<Config> load,
                                                 tls::Role role, int argc, const char* const* argv,
                                                 const config::EnvMap& env, int* exit_code) {
  // SIGHUP and SIGUSR1 end a process by default. Until Daemon::run watches them, one that
  // systemd's reload or logrotate sends during the start is dropped instead (libuv's watchers
  // replace this disposition).
  std::signal(SIGHUP, SIG_IGN);
  std::signal(SIGUSR1, SIG_IGN);
  config::Invocation<Config> inv;
  std::string error;
  auto settings = load_settings(load, role, argc, argv, env, &error, &inv);
  if (settings != nullptr) {
    *exit_code = one_shot(program, inv, *settings);
    if (*exit_code >= 0) return nullptr;
  }
  if (settings == nullptr || !apply_log(settings->config.log, nullptr, &error)) {
    std::fprintf(stderr, "%s: %s\n", program, error.c_str());
    *exit_code = 1;  // Whatever was wrong (flags, file, certificates): --check's "no" too.
    return nullptr;
  }
  for (const std::string& w : inv.warnings) log::warn("configuration", {{"warning", w}});
  return settings;
}

// The SIGHUP handler for DaemonOptions::reload: loads and validates a new snapshot like at
// start-up, logs keys that only a restart applies (|restart_only| says which differ from the
// snapshot the process started with, which is what runs: a change not yet applied is named at
// every reload until the restart), applies [log] and publishes the snapshot. On any failure
// logs why and keeps the running one. Call it at start-up, before any reload.
template <typename Config>
std::function<bool()> reloader(
    LoadFn<Config> load, tls::Role role, int argc, const char* const* argv,
    std::function<config::EnvMap()> env, Reloadable<Settings<Config>>& current,
    std::function<std::vector<std::string>(const Config&, const Config&)> restart_only) {
  return [=, &current, started = current.get()]() -> bool {
    std::string error;
    auto next = load_settings(load, role, argc, argv, env(), &error);
    const auto now = current.get();
    if (next != nullptr && !apply_log(next->config.log, &now->config.log, &error)) next = nullptr;
    if (next == nullptr) {
      log::error("reload: invalid configuration or certificates", {{"error", error}});
      return false;
    }
    for (const std::string& key : restart_only(started->config, next->config)) {
      log::warn("reload: this change applies after a restart", {{"key", key}});
    }
    current.set(std::move(next));
    return true;
  };
}

// The DaemonOptions every daemon takes from its configuration (name, threads, admin listener,
// drain deadline); main() adds status and reload.
template <typename Config>
DaemonOptions daemon_options(std::string name, const Config& cfg) {
  DaemonOptions o;
  o.name = std::move(name);
  o.workers = config::resolve_workers(cfg.workers, std::thread::hardware_concurrency());
  o.admin_host = cfg.admin.host;
  o.admin_port = cfg.admin.port;
  o.drain_timeout = cfg.drain_timeout;
  return o;
}

// The keys both daemons set up once, so a SIGHUP cannot apply them: listeners, threads, the
// store and the HTTP header limit. Each daemon's restart_only adds its own.
template <typename Config>
std::vector<std::string> restart_only_common(const Config& a, const Config& b) {
  std::vector<std::string> keys;
  if (!(a.listen == b.listen)) keys.push_back("listen");
  if (!(a.admin == b.admin)) keys.push_back("admin");
  if (a.workers != b.workers) keys.push_back("workers");
  if (!(a.store == b.store)) keys.push_back("store");
  if (a.limits.max_header_bytes != b.limits.max_header_bytes) {
    keys.push_back("limits.max_header_bytes");
  }
  return keys;
}

}  // namespace coilgun::daemon
