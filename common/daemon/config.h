#pragma once
// Configuration of both daemons: what they share. Each daemon's own schema (its keys, flags and
// checks) and its config struct are in edge/config.h and origin/config.h, written with the
// machinery of config_schema.h; the rules below hold for both.
//
// One TOML file per daemon, command-line flags and COILGUN_*
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
// Errors here carry a std::string detail (ConfigResult, a Result whose error is a ConfigError):
// configuration is not the data path, and an operator needs the file, line and key.
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
// Never empty when it is an error: an empty message means "no error" (ok()).
struct ConfigError {
  std::string message;
  bool ok() const { return message.empty(); }
};

// A value or a ConfigError: coilgun::Result with the operator's text as its error.
template <typename T>
using ConfigResult = Result<T, ConfigError>;

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
// Checks and normalises a host without a port: IPv4, IPv6 (bracketed, or bare when
// |allow_bare_ipv6|) or a DNS name (lower-cased).
ConfigResult<std::string> parse_host(std::string_view host, bool allow_bare_ipv6);

// Parses "HOST:PORT,HOST:PORT" (the environment's and a flag's form of an address list): each
// as parse_host_port, a port of 0 refused, no address twice, at most 64; "" is the empty list.
ConfigResult<std::vector<HostPort>> parse_host_port_list(std::string_view text);

// A web server spoken to over HTTP/1.1: the agent's backend (plain HTTP), the edge's fallback
// (HTTP or HTTPS).
struct BackendUrl {
  // As in HostPort; empty when not configured.
  std::string host;
  uint16_t port = 80;
  bool https = false;  // TLS, the server's certificate verified for |host|.

  // True when no backend is configured.
  bool empty() const { return host.empty(); }
  // "http://127.0.0.1:8080", "https://origin.example:443"; parse_backend_url() reads it back.
  std::string to_string() const;
  friend bool operator==(const BackendUrl&, const BackendUrl&) = default;
};

// Parses "http://HOST[:PORT][/]" (port defaults to 80) or "https://HOST[:PORT][/]" (443). A
// path other than "/", a query or credentials are errors.
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
// The parts both daemons' configurations hold. Default member values are the documented
// defaults.

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
  bool access = true;                    // access: one JSON line per request.
  std::string file;  // file: append lines here (reopened on SIGUSR1); "" = stderr.
  friend bool operator==(const LogConfig&, const LogConfig&) = default;
};

// [store]: the version store (common/store/version_store.h): memory, and memcached behind it
// when servers are named.
struct StoreConfig {
  uint64_t max_bytes = 256 * kMiB;      // max_bytes: bound on everything stored in memory.
  uint32_t versions_per_key = 4;        // versions_per_key: 1..64.
  std::vector<HostPort> memcached;      // memcached: the shared tier's servers; empty: memory only.
  milliseconds memcached_timeout{100};  // memcached_timeout: one request's limit.
  milliseconds memcached_retry{2000};   // memcached_retry: a failed server stays out.
  // memcached_index_fresh: the hot-key window (common/store/shared_store.h); 0 turns it off.
  milliseconds memcached_index_fresh{20};
  uint64_t memcached_max_item = 1000 * 1000;  // memcached_max_item: larger bodies stay local.
  // memcached_username, memcached_password_file: SASL credentials (memcached -S); both or
  // neither. The file holds the password (one trailing newline is not part of it).
  std::string memcached_username;
  std::string memcached_password_file;
  friend bool operator==(const StoreConfig&, const StoreConfig&) = default;
};

// The password in [store] memcached_password_file (see StoreConfig), or why it cannot be used:
// the username or the file set without the other, a file that cannot be read, an empty one,
// or one over 1 KiB. Ok and "" when neither is set. Reads the file system: load_settings()
// reads it once per snapshot (Settings::memcached_password).
ConfigResult<std::string> memcached_password(const StoreConfig& store);

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

// Checks that the TLS files are set, exist, are regular non-empty files and can be opened for
// reading; reports every problem at once. Their PEM content is validated by the TLS module.
// Used by --check and before start-up.
ConfigStatus check_files(const TlsConfig& tls);

}  // namespace coilgun::config
