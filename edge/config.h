#pragma once
// coilgun-edge's configuration: its config struct, its schema with the [[route]] tables, and
// route matching. The rules every key follows (precedence, the environment, value syntax,
// errors) are in common/daemon/config.h.
//
// Threads: as config.h: pure apart from reading the config file; any thread.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/daemon/config.h"

namespace coilgun::config {

// One route of the edge: requests whose Host matches one of |hosts| go to one of |agents|.
struct EdgeRoute {
  // Lower-case exact names ("www.example.com", also IP literals) or wildcards
  // ("*.example.com": any name ending in ".example.com", at any depth, but not
  // "example.com" itself). Empty for the default route, which matches every host.
  std::vector<std::string> hosts;
  // agent: the agents' tunnel addresses, one or more ("a:2408", or ["a:2408", "b:2408"]), in
  // config order, none twice. A request goes to one of those with a tunnel up, chosen by its
  // cache key (EdgeWorker::pick_pool), so a page's versions gather on one agent.
  std::vector<HostPort> agents;
  // agent_name: the name (or IP) every agent's certificate must carry. Empty: each agent's own
  // host (a route with one agent and no agent_name holds that host here).
  std::string agent_name;
  // fallback: where requests go straight over HTTP/1.1 (over TLS for https://, the server's
  // certificate verified against fallback_ca) when none of |agents| has a tunnel up (empty:
  // nowhere, they get 502). A route without one takes the top-level fallback.
  BackendUrl fallback;
  // request_timeout: this route's limits.request_timeout (the longest wait without progress;
  // a stream that keeps moving is never cut). Unset: the [limits] value.
  std::optional<milliseconds> request_timeout;
  // backend_timeout: how long the agent waits for the backend's response head on this route
  // (long polls). Unset: the agent's backend_pool.response_timeout.
  std::optional<milliseconds> backend_timeout;
  // private_deltas: whether responses marked Cache-Control: private or no-store are
  // delta-coded (and so kept as versions in both daemons' memory). Default true.
  bool private_deltas = true;

  // The name |agent|'s certificate must carry.
  const std::string& name_for(const HostPort& agent) const {
    return agent_name.empty() ? agent.host : agent_name;
  }
  friend bool operator==(const EdgeRoute&, const EdgeRoute&) = default;
};

// [tunnel] (edge): the dialing side of the tunnel.
struct EdgeTunnelConfig {
  // connections: TLS connections per agent kept by the process (spread over its workers; a
  // worker whose share is none opens one when a request needs it), 1..64.
  uint32_t connections = 2;
  milliseconds connect_timeout{2000};  // connect_timeout: TCP + TLS handshake.
  milliseconds ping_interval{10000};   // ping_interval
  // answer_timeout: a request was sent on a tunnel and nothing at all came back for this long
  // (a PING goes with it): the tunnel is dead and its requests fail. 100ms .. 5m.
  milliseconds answer_timeout{1000};
  milliseconds backoff_min{100};   // backoff_min: first reconnect delay.
  milliseconds backoff_max{5000};  // backoff_max: cap of the jittered backoff.
  // idle_close: an agent no request used for this long has its tunnels closed; the next
  // request reconnects (one TLS handshake). 0: never.
  milliseconds idle_close{0};
  // max_pending_handshakes: tunnels of the whole process (spread over its workers) in their TCP
  // and TLS handshake at once; more wait their turn, so that an edge starting with thousands of
  // agents, or an agent host coming back, is not hit by every handshake at the same moment.
  uint32_t max_pending_handshakes = 32;
  uint64_t stream_window = 1 * kMiB;       // stream_window: 1 .. 2^31-1 bytes.
  uint64_t connection_window = 16 * kMiB;  // connection_window: 1 .. 2^31-1 bytes.
  friend bool operator==(const EdgeTunnelConfig&, const EdgeTunnelConfig&) = default;
};

// [limits] (edge).
struct EdgeLimits {
  uint64_t max_header_bytes = 64 * kKiB;  // max_header_bytes: of a client request head.
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
  // fallback (top level): the fallback of every route that names none, the default route's.
  BackendUrl fallback;
  // fallback_ca: the CA (PEM) an https:// fallback's certificate must chain to; empty: the
  // system's trust store.
  std::string fallback_ca;
  uint16_t workers = kAutoWorkers;  // workers
  TlsConfig tls;
  EdgeTunnelConfig tunnel;
  StoreConfig store;
  EdgeLimits limits;
  LogConfig log;
  milliseconds drain_timeout{10000};  // drain_timeout
  // metrics.per_agent: coilgun_agent_tunnels and coilgun_agent_rtt_seconds with an "agent"
  // label, a series per agent: off by default, so that /metrics stays bounded with thousands
  // of agents (/stats lists them either way). [restart]
  bool per_agent_metrics = false;
  friend bool operator==(const EdgeConfig&, const EdgeConfig&) = default;
};

// True when a route's fallback (or the default route's) is https://: the edge then builds a
// TLS context for it from fallback_ca.
bool https_fallback(const EdgeConfig& config);

// As load_origin(), for
//   coilgun-edge [-c FILE] [--listen HOST:PORT] [--agent HOST:PORT[,HOST:PORT...]]...
//                [--agent-name NAME] [--fallback URL] [--fallback-ca FILE] [--admin HOST:PORT]
//                [--tls-ca F --tls-cert F --tls-key F]
//                [--workers N|auto] [--log-level L] [--check] [--version] [--help]
// --agent (or top-level `agent`) sets the default route, matching every host; it may be
// repeated, and its values join. --fallback (top-level `fallback`) is every route's fallback
// unless the route names its own.
ConfigResult<Invocation<EdgeConfig>> load_edge(int argc, const char* const* argv,
                                               const EnvMap& env);

// As parse_origin_toml(), for the edge.
ConfigResult<EdgeConfig> parse_edge_toml(std::string_view text, std::string_view file_name);

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
