#pragma once
// Configuration of both daemons: one TOML file per daemon, command-line flags and COILGUN_*
// environment variables, merged key by key with the precedence
//
//     flag  >  environment  >  file  >  built-in default
//
// and validated as a whole before a daemon starts (or, on SIGHUP, before it swaps configs).
//
// The file. Top-level scalars (listen, admin, backend | agent, agent_name, namespace, workers,
// drain_timeout), then tables [tls], [delta], [store], [backend_pool], [limits], [tunnel], [log]
// and, on the edge, any number of [[route]] tables. Every key the daemon does not know is an
// error naming the file, line and dotted key (`edge.toml:12: unknown key "tunel.connections"`);
// a value of the wrong type or out of range names file, line and key the same way. All errors
// of one load are reported together, one per line, sorted by line.
//
// The environment. Every scalar key K can be set with COILGUN_<K> where dots become
// underscores and letters are upper case: COILGUN_LISTEN, COILGUN_TLS_CA,
// COILGUN_TUNNEL_PING_INTERVAL... Routes cannot be set this way. COILGUN_CONFIG names the file
// when -c is not given. An unknown COILGUN_* variable, or one set to the empty string, is not an
// error: it is returned as a warning for the daemon to log. The environment is passed in as a
// map so tests never touch the real one.
//
// Values. Addresses are HOST:PORT (IPv4, [IPv6] or a DNS name; port 0 asks for an ephemeral
// port). Durations are "250ms", "10s", "5m", "1h" or an integer number of seconds. Sizes are
// "64KiB", "8MiB", "1GiB" (binary), "64KB", "8MB" (decimal) or an integer number of bytes.
// Workers is "auto" (one per core) or 1..256.
//
// The agent name of the edge's default route: when --agent (or COILGUN_AGENT) overrides the
// file's `agent`, the file's `agent_name` belongs to the address it replaced and is dropped; in
// general an agent_name set at a lower precedence level than agent is ignored and the name
// defaults to the host part of the agent address (an IP address is accepted: the agent's
// certificate must then carry it as an IP SAN).
//
// Errors here carry a std::string detail (ConfigResult): configuration is not the data path,
// and an operator needs the file, line and key. status() converts to a coilgun::Status with
// Code::kConfig where a Status is wanted.
//
// Threads: every function here is pure apart from check_files() (which reads the file system)
// and the loaders (which read the config file); all may be called from any thread.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "common/obs/log.h"
#include "common/tls/tls.h"
#include "proto/status.h"

namespace coilgun::config {

// ---------------------------------------------------------------------------------------------
// Errors

// Why a configuration value or file was rejected: one or more lines of text meant for an
// operator, each naming where the value came from (file:line, environment variable or flag).
struct ConfigError {
  std::string message;
};

// A value or a ConfigError. T must be default-constructible and movable.
template <typename T>
class [[nodiscard]] ConfigResult {
 public:
  ConfigResult(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design.
  ConfigResult(ConfigError error)                      // NOLINT: implicit by design.
      : error_(std::move(error.message)), failed_(true) {}

  // True when the result holds a value.
  bool ok() const { return !failed_; }
  // The operator-facing message; "" on success.
  const std::string& error() const { return error_; }
  // The error as a Status (Code::kConfig with a static message); Ok on success. The detail is
  // only in error().
  Status status() const {
    return failed_ ? Status(Code::kConfig, "invalid configuration") : Status::Ok();
  }

  // The value; meaningful only when ok().
  T& value() & { return value_; }
  const T& value() const& { return value_; }
  T&& value() && { return std::move(value_); }
  T* operator->() { return &value_; }
  const T* operator->() const { return &value_; }
  T& operator*() & { return value_; }
  const T& operator*() const& { return value_; }

 private:
  T value_{};
  std::string error_;
  bool failed_ = false;
};

// Success or a ConfigError, for checks that produce no value.
using ConfigStatus = ConfigResult<std::monostate>;

// The successful ConfigStatus.
inline ConfigStatus config_ok() { return std::monostate{}; }

// ---------------------------------------------------------------------------------------------
// Value types and their parsers. Parsers trim surrounding blanks, never throw, and name the
// offending text in their error.

// A socket address: where a daemon listens or which agent the edge dials.
struct HostPort {
  // An IPv4 literal, an IPv6 literal without brackets, or a lower-case DNS name.
  std::string host;
  // 0 asks the kernel for an ephemeral port (used by tests).
  uint16_t port = 0;

  // "127.0.0.1:8080", "[::1]:8080" or "origin.example:2408"; parse_host_port() reads it back.
  std::string to_string() const;
  // True when host is an IPv6 literal.
  bool is_ipv6() const;
  friend bool operator==(const HostPort&, const HostPort&) = default;
};

// Parses "HOST:PORT": "10.0.0.1:80", "[::1]:80", "origin.example:2408". The port is required
// (0..65535); IPv6 literals need brackets; DNS names are lower-cased.
ConfigResult<HostPort> parse_host_port(std::string_view text);

// The web server the agent forwards to: plain HTTP/1.1 over TCP.
struct BackendUrl {
  // As in HostPort; empty when not configured.
  std::string host;
  uint16_t port = 80;

  // True when no backend is configured.
  bool empty() const { return host.empty(); }
  // "http://127.0.0.1:8080"; parse_backend_url() reads it back.
  std::string to_string() const;
  friend bool operator==(const BackendUrl&, const BackendUrl&) = default;
};

// Parses "http://HOST[:PORT][/]" (port defaults to 80). A path other than "/", a query,
// credentials or https:// (not supported yet) are errors.
ConfigResult<BackendUrl> parse_backend_url(std::string_view text);

// Parses "250ms", "10s", "5m", "1h" or a bare integer (seconds). Negative values, fractions and
// other units are errors.
ConfigResult<std::chrono::milliseconds> parse_duration(std::string_view text);

// Formats |d| in the largest unit that divides it exactly ("5m", "10s", "250ms");
// parse_duration() reads it back.
std::string format_duration(std::chrono::milliseconds d);

// Parses a byte count: a bare integer, or an integer with a unit: KiB, MiB, GiB, TiB (powers of
// 1024) or KB, MB, GB, TB (powers of 1000), any letter case, an optional blank before the unit.
// "K", "M" and "G" alone are errors (ambiguous).
ConfigResult<uint64_t> parse_size(std::string_view text);

// Formats |bytes| as "8MiB" when a binary unit divides it exactly, else as plain digits;
// parse_size() reads it back.
std::string format_size(uint64_t bytes);

// The workers value meaning "one per core".
inline constexpr uint16_t kAutoWorkers = 0;
// The largest explicit worker count.
inline constexpr uint16_t kMaxWorkers = 256;

// Parses "auto" (kAutoWorkers) or an integer 1..kMaxWorkers.
ConfigResult<uint16_t> parse_workers(std::string_view text);

// The number of worker loops to run: |configured| itself, or for kAutoWorkers
// |hardware_threads| (std::thread::hardware_concurrency(); 0 counts as 1) capped at kMaxWorkers.
unsigned resolve_workers(uint16_t configured, unsigned hardware_threads);

// True when a key's value must never be printed: it contains "password" or "token" (any letter
// case). to_toml() prints such values as "<redacted>". No key of today's configuration is
// secret; the rule exists so a future credential is never printed by accident.
bool is_secret_key(std::string_view key);

// ---------------------------------------------------------------------------------------------
// The configurations. Default member values are the documented defaults.

using std::chrono::milliseconds;

inline constexpr uint64_t kKiB = 1024;
inline constexpr uint64_t kMiB = 1024 * kKiB;
inline constexpr uint64_t kGiB = 1024 * kMiB;

// Mutual-TLS material of the tunnel: PEM file paths. All three are required.
// (ca: the CA both sides verify the peer against; cert: this daemon's certificate chain; key:
// its private key.)
using TlsConfig = tls::TlsFiles;

// [log]
struct LogConfig {
  log::Level level = log::Level::kInfo;  // level
  bool access = true;                // access: one JSON line per request.
  std::string file;                  // file: append lines here (reopened on SIGUSR1); "" = stderr.
  friend bool operator==(const LogConfig&, const LogConfig&) = default;
};

// [store]: the in-process version store (common/store/version_store.h).
struct StoreConfig {
  uint64_t max_bytes = 256 * kMiB;  // max_bytes: bound on everything stored.
  uint32_t versions_per_key = 4;    // versions_per_key: 1..64.
  friend bool operator==(const StoreConfig&, const StoreConfig&) = default;
};

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
  HostPort listen{"0.0.0.0", 2408};   // listen: where edges connect (tunnel, TLS).
  HostPort admin{"127.0.0.1", 9408};  // admin: /metrics, /stats, /ready.
  BackendUrl backend;                 // backend: required.
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

// One route of the edge: requests whose Host matches one of |hosts| go to |agent|.
struct EdgeRoute {
  // Lower-case exact names ("www.example.com", also IP literals) or wildcards
  // ("*.example.com": any name ending in ".example.com", at any depth, but not
  // "example.com" itself). Empty for the default route, which matches every host.
  std::vector<std::string> hosts;
  HostPort agent;          // agent: the agent's tunnel address.
  std::string agent_name;  // agent_name: the name (or IP) the agent's certificate must carry.
  // request_timeout: this route's limits.request_timeout (the longest wait without progress;
  // a stream that keeps moving is never cut). Unset: the [limits] value.
  std::optional<milliseconds> request_timeout;
  // backend_timeout: how long the agent waits for the backend's response head on this route
  // (long polls). Unset: the agent's backend_pool.response_timeout.
  std::optional<milliseconds> backend_timeout;
  // private_deltas: whether responses marked Cache-Control: private or no-store are
  // delta-coded (and so kept as versions in both daemons' memory). Default true.
  bool private_deltas = true;
  friend bool operator==(const EdgeRoute&, const EdgeRoute&) = default;
};

// [tunnel] (edge): the dialing side of the tunnel.
struct EdgeTunnelConfig {
  uint32_t connections = 2;                // connections: TLS connections per agent, 1..64.
  milliseconds connect_timeout{2000};      // connect_timeout: TCP + TLS handshake.
  milliseconds ping_interval{10000};       // ping_interval
  // answer_timeout: a request was sent on a tunnel and nothing at all came back for this long
  // (a PING goes with it): the tunnel is dead and its requests fail. 100ms .. 5m.
  milliseconds answer_timeout{1000};
  milliseconds backoff_min{100};           // backoff_min: first reconnect delay.
  milliseconds backoff_max{5000};          // backoff_max: cap of the jittered backoff.
  uint64_t stream_window = 1 * kMiB;       // stream_window: 1 .. 2^31-1 bytes.
  uint64_t connection_window = 16 * kMiB;  // connection_window: 1 .. 2^31-1 bytes.
  friend bool operator==(const EdgeTunnelConfig&, const EdgeTunnelConfig&) = default;
};

// [limits] (edge).
struct EdgeLimits {
  uint64_t max_header_bytes = 64 * kKiB;    // max_header_bytes: of a client request head.
  uint32_t max_headers = 128;  // max_headers: field lines in a client request head, 1..65535.
  uint64_t max_coded_body = 64 * kMiB;      // max_coded_body: largest body rebuilt from a delta.
  milliseconds client_idle_timeout{60000};  // client_idle_timeout: idle keep-alive clients.
  // client_header_timeout: a request head must be complete this long after its first byte.
  milliseconds client_header_timeout{10000};
  // client_body_timeout: longest pause between two bytes of a request body.
  milliseconds client_body_timeout{60000};
  // max_client_connections: open client connections per worker; more are closed at accept.
  uint32_t max_client_connections = 10000;
  // request_timeout: longest wait without progress (request body sent, response head or body
  // received, the client taking bytes); a long transfer that keeps moving is never cut.
  milliseconds request_timeout{60000};
  friend bool operator==(const EdgeLimits&, const EdgeLimits&) = default;
};

// Everything coilgun-edge reads at start-up. Holds at least one route once validated.
struct EdgeConfig {
  HostPort listen{"0.0.0.0", 8080};   // listen: client HTTP listener.
  HostPort admin{"127.0.0.1", 9080};  // admin
  // [[route]] tables in file order; no host appears twice.
  std::vector<EdgeRoute> routes;
  // From top-level agent / agent_name (or --agent / --agent-name): matches every host that no
  // route matches. Its hosts are empty.
  std::optional<EdgeRoute> default_route;
  uint16_t workers = kAutoWorkers;  // workers
  TlsConfig tls;
  EdgeTunnelConfig tunnel;
  StoreConfig store;
  EdgeLimits limits;
  LogConfig log;
  milliseconds drain_timeout{10000};  // drain_timeout
  friend bool operator==(const EdgeConfig&, const EdgeConfig&) = default;
};

// ---------------------------------------------------------------------------------------------
// Loading

// Environment variables by name, e.g. from environment_from(environ).
using EnvMap = std::map<std::string, std::string, std::less<>>;

// Copies a NULL-terminated "NAME=value" array (such as environ) into an EnvMap. Only variables
// starting with "COILGUN_" are kept (nothing else is read). |envp| may be null.
EnvMap environment_from(const char* const* envp);

// What a daemon's command line asked for, with the merged configuration.
template <typename Config>
struct Invocation {
  bool check = false;    // --check: validate config and certificates, then exit 0 or 1.
  bool version = false;  // --version: print the version and exit.
  // --print-config: print the effective configuration (to_toml), then exit 0.
  bool print_config = false;
  bool help = false;  // --help: print help_text and exit.
  // The usage text (always filled in, so a caller may print it after an error too).
  std::string help_text;
  // The file read, from -c or COILGUN_CONFIG; "" when none.
  std::string config_path;
  // The merged, validated configuration. Left at defaults when help or version is set: those
  // never read the file, so they work with a broken one.
  Config config;
  // Operator-worthy notes that are not errors (unknown or empty COILGUN_* variables).
  std::vector<std::string> warnings;
};

// Parses coilgun-origin's command line
//   coilgun-origin [-c FILE] [--listen HOST:PORT] [--backend http://HOST:PORT]
//                  [--admin HOST:PORT] [--tls-ca F --tls-cert F --tls-key F]
//                  [--workers N|auto] [--log-level L] [--check] [--version] [--help]
// reads the file (from -c, else COILGUN_CONFIG, else none), applies |env| and the flags, and
// validates the result. argv[0] is the program name. Safe to call again on SIGHUP with the same
// arguments: it rereads the file and keeps nothing between calls.
ConfigResult<Invocation<OriginConfig>> load_origin(int argc, const char* const* argv,
                                                   const EnvMap& env);

// As load_origin(), for
//   coilgun-edge [-c FILE] [--listen HOST:PORT] [--agent HOST:PORT] [--agent-name NAME]
//                [--admin HOST:PORT] [--tls-ca F --tls-cert F --tls-key F]
//                [--workers N|auto] [--log-level L] [--check] [--version] [--help]
// --agent (or top-level `agent`) sets the default route, matching every host.
ConfigResult<Invocation<EdgeConfig>> load_edge(int argc, const char* const* argv,
                                               const EnvMap& env);

// Parses TOML |text| as an origin config file named |file_name| (used in errors), over the
// defaults, and validates the result: load_origin() without flags or environment.
ConfigResult<OriginConfig> parse_origin_toml(std::string_view text, std::string_view file_name);

// As parse_origin_toml(), for the edge.
ConfigResult<EdgeConfig> parse_edge_toml(std::string_view text, std::string_view file_name);

// Checks that the TLS files are set, exist, are regular non-empty files and can be opened for
// reading; reports every problem at once. Their PEM content is validated by the TLS module.
// Used by --check and before start-up.
ConfigStatus check_files(const TlsConfig& tls);

// The effective configuration as TOML: every key, defaults included, secret values (see
// is_secret_key()) redacted. parse_origin_toml() of the output yields |config| again for any
// validated config (secrets aside).
std::string to_toml(const OriginConfig& config);

// As to_toml(const OriginConfig&), for the edge; routes come last as [[route]] tables.
std::string to_toml(const EdgeConfig& config);

// ---------------------------------------------------------------------------------------------
// Routing

// The route for a request's Host header value |host| ("Example.com:8080", "[::1]:80"): the
// host is compared case-insensitively, without its port or a trailing dot. An exact name beats
// any wildcard; among wildcards the longest suffix wins; the default route comes last. Returns
// nullptr when nothing matches. The pointer lives as long as |config|. Does not allocate; linear
// in the number of host patterns.
const EdgeRoute* match_route(const EdgeConfig& config, std::string_view host);

}  // namespace coilgun::config
