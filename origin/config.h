#pragma once
// coilgun-origin's configuration: its config struct and its schema. The rules every key
// follows (precedence, the environment, value syntax, errors) are in common/daemon/config.h.
//
// Threads: as config.h: pure apart from reading the config file; any thread.

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/daemon/config.h"

namespace coilgun::config {

// [delta] (origin): how the agent encodes response bodies (proto/delta.h).
struct DeltaConfig {
  uint64_t max_body = 8 * kMiB;  // max_body: larger bodies stream through without a delta.
  int effort = 5;                // effort: delta matcher effort, 1 (fastest) .. 9 (smallest).
  int full_level = 3;            // full_level: zstd level for full bodies, 1..19.
  // stream_after: a body the agent would delta-code that pauses this long before its end (a
  // long poll, a trickle) is streamed as it comes instead.
  milliseconds stream_after{20};
  friend bool operator==(const DeltaConfig&, const DeltaConfig&) = default;
};

// [backend_pool] (origin): keep-alive connections to the backend.
struct BackendPoolConfig {
  uint32_t max_idle_per_worker = 32;     // max_idle_per_worker: 0 disables reuse.
  milliseconds connect_timeout{3000};    // connect_timeout
  milliseconds response_timeout{60000};  // response_timeout: until response head.
  friend bool operator==(const BackendPoolConfig&, const BackendPoolConfig&) = default;
};

// [backend_tls] (origin): how the agent speaks to an https:// backend.
struct BackendTlsConfig {
  std::string ca;    // ca: PEM the backend's certificate must chain to; "": the system's store.
  std::string cert;  // cert: a client certificate (PEM) for backends that ask; "": none.
  std::string key;   // key: its private key (PEM); set with cert.
  // name: the name the backend's certificate must carry, sent as SNI; "": the backend URL's
  // host.
  std::string name;
  friend bool operator==(const BackendTlsConfig&, const BackendTlsConfig&) = default;
};

// [backend_health] (origin): whether the backend answers, for /ready (origin/backend_health.h).
struct BackendHealthConfig {
  std::string path;             // path: "GET <path>" to the backend; "": no checks. [restart]
  milliseconds interval{5000};  // interval: between checks, 100ms .. 1h.
  milliseconds timeout{2000};   // timeout: for one check (connect included), 10ms .. 1m.
  friend bool operator==(const BackendHealthConfig&, const BackendHealthConfig&) = default;
};

// [limits] (origin).
struct OriginLimits {
  uint64_t max_header_bytes = 64 * kKiB;  // max_header_bytes: of a backend response head.
  uint32_t max_headers = 256;  // max_headers: field lines in a backend response head, 1..65535.
  friend bool operator==(const OriginLimits&, const OriginLimits&) = default;
};

// The bounds of [tunnel] handshake_timeout on the origin.
inline constexpr milliseconds kMinHandshakeTimeout{100};
inline constexpr milliseconds kMaxHandshakeTimeout{5 * 60 * 1000};
// The largest [tunnel] max_pending_handshakes (the packaged unit's file descriptor limit).
inline constexpr uint32_t kMaxPendingHandshakes = 1 << 20;

// [tunnel] (origin): the accepting side of the tunnel.
struct OriginTunnelConfig {
  milliseconds ping_interval{10000};       // ping_interval
  uint64_t stream_window = 256 * kKiB;     // stream_window: 1 .. 2^31-1 bytes.
  uint64_t connection_window = 16 * kMiB;  // connection_window: 1 .. 2^31-1 bytes.
  uint32_t max_streams = 1000;             // max_streams: concurrent streams per connection.
  // handshake_timeout: a new connection that has not finished the TLS handshake this long
  // after it was accepted is closed. kMinHandshakeTimeout .. kMaxHandshakeTimeout.
  milliseconds handshake_timeout{3000};
  // max_pending_handshakes: connections of the whole process (all workers together) accepted
  // but not yet through the TLS handshake; when a new one arrives with this many pending, the
  // oldest pending one of its worker is closed to make room (or the new one, if that worker
  // has none). Established tunnels do not count. 1 .. kMaxPendingHandshakes.
  uint32_t max_pending_handshakes = 256;
  // max_pending_per_source: of those, how many may come from one IP address; one more from it
  // is closed at once. 1 .. kMaxPendingHandshakes.
  uint32_t max_pending_per_source = 64;
  friend bool operator==(const OriginTunnelConfig&, const OriginTunnelConfig&) = default;
};

// Everything coilgun-origin (the agent) reads at start-up.
struct OriginConfig {
  HostPort listen{"0.0.0.0", 2408};    // listen: where edges connect (tunnel, TLS).
  HostPort admin{"127.0.0.1", 9408};   // admin: /metrics, /stats, /ready.
  BackendUrl backend;                  // backend: required, http:// or https://.
  BackendTlsConfig backend_tls;        // [backend_tls]: for an https:// backend.
  BackendHealthConfig backend_health;  // [backend_health]
  // namespace: names this agent's content in every cache key, so one agent's versions are never
  // a base for another's. 1..64 characters of [A-Za-z0-9._-].
  std::string namespace_name = "default";
  uint16_t workers = kAutoWorkers;  // workers
  TlsConfig tls;
  DeltaConfig delta;
  StoreConfig store;
  BackendPoolConfig backend_pool;
  OriginLimits limits;
  OriginTunnelConfig tunnel;
  LogConfig log;
  milliseconds drain_timeout{10000};  // drain_timeout: SIGTERM deadline.
  friend bool operator==(const OriginConfig&, const OriginConfig&) = default;
};

// ---------------------------------------------------------------------------------------------
// Loading

// Parses coilgun-origin's command line
//   coilgun-origin [-c FILE] [--listen HOST:PORT] [--backend http(s)://HOST:PORT] [--backend-ca F]
//                  [--admin HOST:PORT] [--tls-ca F --tls-cert F --tls-key F]
//                  [--workers N|auto] [--log-level L] [--check] [--version] [--help]
// reads the file (from -c, else COILGUN_CONFIG, else none), applies |env| and the flags, and
// validates the result. argv[0] is the program name. Safe to call again on SIGHUP with the same
// arguments: it rereads the file and keeps nothing between calls.
ConfigResult<Invocation<OriginConfig>> load_origin(int argc, const char* const* argv,
                                                   const EnvMap& env);

// Parses TOML |text| as an origin config file named |file_name| (used in errors), over the
// defaults, and validates the result: load_origin() without flags or environment.
ConfigResult<OriginConfig> parse_origin_toml(std::string_view text, std::string_view file_name);

// The effective configuration as TOML: every key, defaults included, secret values (see
// is_secret_key()) redacted. parse_origin_toml() of the output yields |config| again for any
// validated config (secrets aside).
std::string to_toml(const OriginConfig& config);

}  // namespace coilgun::config
