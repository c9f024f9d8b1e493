#include "origin/config.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "common/daemon/config_schema.h"
#include "common/http/message.h"

namespace coilgun::config {
namespace {

struct OriginDraft {
  OriginConfig cfg;
};

// The namespace key: 1..64 characters of [A-Za-z0-9._-].
ConfigResult<std::string> namespace_value(std::string_view s) {
  if (s.empty() || s.size() > 64) {
    return ConfigError{"namespace must be 1..64 characters, got " + quote(s)};
  }
  for (char c : s) {
    const char l = http::ascii_lower(c);
    const bool ok =
        (c >= '0' && c <= '9') || (l >= 'a' && l <= 'z') || c == '.' || c == '_' || c == '-';
    if (!ok) {
      return ConfigError{"namespace " + quote(s) + " may only hold letters, digits, '.', '_', '-'"};
    }
  }
  return std::string(s);
}

// The backend_tls.name key: "" or a DNS name (lower-cased) or IP address, as a certificate
// names it.
ConfigResult<std::string> tls_name(std::string_view s) {
  if (s.empty()) return std::string();
  auto parsed = parse_host(s, /*allow_bare_ipv6=*/true);
  if (!parsed.ok()) {
    return ConfigError{"backend_tls.name " + quote(s) + " is not a DNS name or an IP address"};
  }
  return std::move(parsed).value();
}

// The backend_health.path key: "" (no checks) or an origin-form target: "/", then visible
// ASCII, at most 1024 characters.
ConfigResult<std::string> health_path(std::string_view s) {
  const bool visible = std::all_of(s.begin(), s.end(), [](char c) { return c > 0x20 && c < 0x7f; });
  if (s.empty() || (s[0] == '/' && s.size() <= 1024 && visible)) return std::string(s);
  return ConfigError{"backend_health.path " + quote(s) + " must be a path such as \"/healthz\""};
}

std::vector<KeyDef<OriginDraft>> origin_keys() {
  using D = OriginDraft;
  std::vector<KeyDef<D>> keys{
      host_port_key<D>("listen", COILGUN_CONFIG_FIELD(cfg.listen)),
      host_port_key<D>("admin", COILGUN_CONFIG_FIELD(cfg.admin)),
      backend_key<D>("backend", COILGUN_CONFIG_FIELD(cfg.backend)),
      string_key<D>("namespace", COILGUN_CONFIG_FIELD(cfg.namespace_name), namespace_value),
      workers_key<D>("workers", COILGUN_CONFIG_FIELD(cfg.workers)),
      duration_key<D>("drain_timeout", COILGUN_CONFIG_FIELD(cfg.drain_timeout), milliseconds(0)),
      string_key<D>("backend_tls.ca", COILGUN_CONFIG_FIELD(cfg.backend_tls.ca), any_path),
      string_key<D>("backend_tls.cert", COILGUN_CONFIG_FIELD(cfg.backend_tls.cert), any_path),
      string_key<D>("backend_tls.key", COILGUN_CONFIG_FIELD(cfg.backend_tls.key), any_path),
      string_key<D>("backend_tls.name", COILGUN_CONFIG_FIELD(cfg.backend_tls.name), tls_name),
      string_key<D>("backend_health.path", COILGUN_CONFIG_FIELD(cfg.backend_health.path),
                    health_path),
      duration_key<D>("backend_health.interval", COILGUN_CONFIG_FIELD(cfg.backend_health.interval),
                      milliseconds(100), milliseconds(3600000)),
      duration_key<D>("backend_health.timeout", COILGUN_CONFIG_FIELD(cfg.backend_health.timeout),
                      milliseconds(10), milliseconds(60000)),
      string_key<D>("tls.ca", COILGUN_CONFIG_FIELD(cfg.tls.ca), non_empty_path),
      string_key<D>("tls.cert", COILGUN_CONFIG_FIELD(cfg.tls.cert), non_empty_path),
      string_key<D>("tls.key", COILGUN_CONFIG_FIELD(cfg.tls.key), non_empty_path),
      size_key<D>("delta.max_body", COILGUN_CONFIG_FIELD(cfg.delta.max_body), 1, kMaxSize),
      int_key<D>("delta.effort", COILGUN_CONFIG_FIELD(cfg.delta.effort), 1, 9),
      int_key<D>("delta.full_level", COILGUN_CONFIG_FIELD(cfg.delta.full_level), 1, 19),
      duration_key<D>("delta.stream_after", COILGUN_CONFIG_FIELD(cfg.delta.stream_after),
                      milliseconds(1), milliseconds(60000)),
      int_key<D>("backend_pool.max_idle_per_worker",
                 COILGUN_CONFIG_FIELD(cfg.backend_pool.max_idle_per_worker), 0, 65535),
      duration_key<D>("backend_pool.connect_timeout",
                      COILGUN_CONFIG_FIELD(cfg.backend_pool.connect_timeout)),
      duration_key<D>("backend_pool.response_timeout",
                      COILGUN_CONFIG_FIELD(cfg.backend_pool.response_timeout)),
      size_key<D>("limits.max_header_bytes", COILGUN_CONFIG_FIELD(cfg.limits.max_header_bytes),
                  1 * kKiB, 16 * kMiB),
      int_key<D>("limits.max_headers", COILGUN_CONFIG_FIELD(cfg.limits.max_headers), 1, 65535),
      duration_key<D>("tunnel.ping_interval", COILGUN_CONFIG_FIELD(cfg.tunnel.ping_interval)),
      size_key<D>("tunnel.stream_window", COILGUN_CONFIG_FIELD(cfg.tunnel.stream_window), 1,
                  kMaxWindow),
      size_key<D>("tunnel.connection_window", COILGUN_CONFIG_FIELD(cfg.tunnel.connection_window), 1,
                  kMaxWindow),
      int_key<D>("tunnel.max_streams", COILGUN_CONFIG_FIELD(cfg.tunnel.max_streams), 1, 1 << 20),
      duration_key<D>("tunnel.handshake_timeout",
                      COILGUN_CONFIG_FIELD(cfg.tunnel.handshake_timeout), kMinHandshakeTimeout,
                      kMaxHandshakeTimeout),
      int_key<D>("tunnel.max_pending_handshakes",
                 COILGUN_CONFIG_FIELD(cfg.tunnel.max_pending_handshakes), 1, kMaxPendingHandshakes),
      int_key<D>("tunnel.max_pending_per_source",
                 COILGUN_CONFIG_FIELD(cfg.tunnel.max_pending_per_source), 1, kMaxPendingHandshakes),
      log_level_key<D>("log.level", COILGUN_CONFIG_FIELD(cfg.log.level)),
      bool_key<D>("log.access", COILGUN_CONFIG_FIELD(cfg.log.access)),
      string_key<D>("log.file", COILGUN_CONFIG_FIELD(cfg.log.file), any_path),
  };
  for (auto& k : store_keys<D>()) keys.push_back(std::move(k));
  return keys;
}

void finish_origin(OriginDraft& d, const std::map<std::string, Layer>&, Errors& errors) {
  if (d.cfg.backend.empty()) {
    errors.add("backend is not set; " + where_to_set("backend", "--backend"));
  }
  const BackendTlsConfig& b = d.cfg.backend_tls;
  if (b.cert.empty() != b.key.empty()) {
    errors.add("backend_tls.cert and backend_tls.key go together: set both or neither");
  }
  if (!d.cfg.backend.https && !(b == BackendTlsConfig{})) {
    errors.add("[backend_tls] is set but backend " + quote(d.cfg.backend.to_string()) +
               " is not https://");
  }
  require_tls(d.cfg.tls, errors);
}

std::vector<FlagDef> origin_flags() {
  return {
      {"--listen", "listen", "HOST:PORT", "Tunnel listener HOST:PORT (default 0.0.0.0:2408)"},
      {"--backend", "backend", "URL", "Web server to forward to, http(s)://HOST:PORT"},
      {"--backend-ca", "backend_tls.ca", "FILE",
       "CA (PEM) an https:// backend's certificate must chain to (default: the system's)"},
      {"--admin", "admin", "HOST:PORT", "Admin listener HOST:PORT (default 127.0.0.1:9408)"},
      {"--tls-ca", "tls.ca", "FILE", "CA certificate (PEM) edges must be signed by"},
      {"--tls-cert", "tls.cert", "FILE", "This agent's certificate (PEM)"},
      {"--tls-key", "tls.key", "FILE", "This agent's private key (PEM)"},
      {"--workers", "workers", "N|auto", "Worker loops: N (1..256) or auto (default auto)"},
      {"--log-level", "log.level", "LEVEL", "debug, info, warn or error (default info)"},
  };
}

const Schema<OriginDraft>& schema() {
  static const Schema<OriginDraft> s{
      .program = "coilgun-origin",
      .description = "coilgun-origin: the Coilgun agent beside the web server",
      .flags = origin_flags(),
      .keys = origin_keys(),
      .special = nullptr,
      .special_names = {},
      .finish = finish_origin,
  };
  return s;
}

}  // namespace

ConfigResult<Invocation<OriginConfig>> load_origin(int argc, const char* const* argv,
                                                   const EnvMap& env) {
  return load(schema(), argc, argv, env);
}

ConfigResult<OriginConfig> parse_origin_toml(std::string_view text, std::string_view file_name) {
  return parse_text(schema(), text, file_name);
}

std::string to_toml(const OriginConfig& config) {
  std::string out = "# coilgun-origin effective configuration: every key, defaults included.\n";
  print_keys(schema().keys, OriginDraft{config}, out);
  return out;
}

}  // namespace coilgun::config
