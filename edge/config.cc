#include "edge/config.h"

#include <algorithm>
#include <map>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/daemon/config_schema.h"
#include "common/http/message.h"

namespace coilgun::config {
namespace {

using http::iequals;
using http::to_lower;

// The configuration being built. The default route is kept as its two keys until the end,
// because which agent_name applies depends on where each came from.
struct EdgeDraft {
  EdgeConfig cfg;
  std::vector<HostPort> agents;
  std::string agent_name;
};

const Schema<EdgeDraft>& edge_schema();

// A certificate name: a DNS name (lower-cased) or an IP address (IPv6 with or without
// brackets).
ConfigResult<std::string> agent_name_value(std::string_view s) {
  ConfigResult<std::string> h = parse_host(trim(s), /*allow_bare_ipv6=*/true);
  if (!h.ok()) return ConfigError{"invalid agent name " + quote(s) + ": " + h.error().message};
  return h;
}

// "" when |pattern| is a valid, lower-cased route host pattern.
std::string host_pattern_problem(const std::string& pattern) {
  if (pattern.empty()) return "empty host pattern";
  if (pattern == "*") {
    return "host pattern \"*\" is not allowed; set the top-level agent for a default route";
  }
  std::string_view name = pattern;
  if (name.starts_with("*.")) {
    name.remove_prefix(2);
  } else if (name.find('*') != std::string_view::npos) {
    return "host pattern " + quote(pattern) +
           ": a wildcard must be a whole leading label, as in \"*.example.com\"";
  }
  if (http::is_ipv4_address(name) || http::is_ipv6_address(name)) {
    if (name.size() != pattern.size()) {
      return "host pattern " + quote(pattern) + ": an IP address cannot have a wildcard";
    }
    return "";
  }
  if (name.find(':') != std::string_view::npos) {
    return "host pattern " + quote(pattern) + " has a port; ports are ignored when matching";
  }
  if (std::string problem = dns_name_problem(name); !problem.empty()) {
    return "host pattern " + quote(pattern) + ": " + problem;
  }
  return "";
}

std::vector<KeyDef<EdgeDraft>> edge_keys() {
  using D = EdgeDraft;
  std::vector<KeyDef<D>> keys{
      host_port_key<D>("listen", COILGUN_CONFIG_FIELD(cfg.listen)),
      host_port_key<D>("admin", COILGUN_CONFIG_FIELD(cfg.admin)),
      host_port_list_key<D>("agent", COILGUN_CONFIG_FIELD(agents)),
      string_key<D>("agent_name", COILGUN_CONFIG_FIELD(agent_name), agent_name_value),
      backend_key<D>("fallback", COILGUN_CONFIG_FIELD(cfg.fallback)),
      string_key<D>("fallback_ca", COILGUN_CONFIG_FIELD(cfg.fallback_ca), any_path),
      workers_key<D>("workers", COILGUN_CONFIG_FIELD(cfg.workers)),
      duration_key<D>("drain_timeout", COILGUN_CONFIG_FIELD(cfg.drain_timeout), milliseconds(0)),
      string_key<D>("tls.ca", COILGUN_CONFIG_FIELD(cfg.tls.ca), non_empty_path),
      string_key<D>("tls.cert", COILGUN_CONFIG_FIELD(cfg.tls.cert), non_empty_path),
      string_key<D>("tls.key", COILGUN_CONFIG_FIELD(cfg.tls.key), non_empty_path),
      int_key<D>("tunnel.connections", COILGUN_CONFIG_FIELD(cfg.tunnel.connections), 1, 64),
      duration_key<D>("tunnel.connect_timeout", COILGUN_CONFIG_FIELD(cfg.tunnel.connect_timeout)),
      duration_key<D>("tunnel.ping_interval", COILGUN_CONFIG_FIELD(cfg.tunnel.ping_interval)),
      duration_key<D>("tunnel.answer_timeout", COILGUN_CONFIG_FIELD(cfg.tunnel.answer_timeout),
                      milliseconds(100), milliseconds(5 * 60 * 1000)),
      duration_key<D>("tunnel.backoff_min", COILGUN_CONFIG_FIELD(cfg.tunnel.backoff_min)),
      duration_key<D>("tunnel.backoff_max", COILGUN_CONFIG_FIELD(cfg.tunnel.backoff_max)),
      duration_key<D>("tunnel.idle_close", COILGUN_CONFIG_FIELD(cfg.tunnel.idle_close),
                      milliseconds(0)),
      int_key<D>("tunnel.max_pending_handshakes",
                 COILGUN_CONFIG_FIELD(cfg.tunnel.max_pending_handshakes), 1, 4096),
      size_key<D>("tunnel.stream_window", COILGUN_CONFIG_FIELD(cfg.tunnel.stream_window), 1,
                  kMaxWindow),
      size_key<D>("tunnel.connection_window", COILGUN_CONFIG_FIELD(cfg.tunnel.connection_window), 1,
                  kMaxWindow),
      size_key<D>("limits.max_header_bytes", COILGUN_CONFIG_FIELD(cfg.limits.max_header_bytes),
                  1 * kKiB, 16 * kMiB),
      int_key<D>("limits.max_headers", COILGUN_CONFIG_FIELD(cfg.limits.max_headers), 1, 65535),
      size_key<D>("limits.max_coded_body", COILGUN_CONFIG_FIELD(cfg.limits.max_coded_body), 1,
                  kMaxSize),
      duration_key<D>("limits.client_idle_timeout",
                      COILGUN_CONFIG_FIELD(cfg.limits.client_idle_timeout)),
      duration_key<D>("limits.client_header_timeout",
                      COILGUN_CONFIG_FIELD(cfg.limits.client_header_timeout)),
      duration_key<D>("limits.client_body_timeout",
                      COILGUN_CONFIG_FIELD(cfg.limits.client_body_timeout)),
      int_key<D>("limits.max_client_connections",
                 COILGUN_CONFIG_FIELD(cfg.limits.max_client_connections), 1, 1 << 20),
      duration_key<D>("limits.request_timeout", COILGUN_CONFIG_FIELD(cfg.limits.request_timeout)),
      log_level_key<D>("log.level", COILGUN_CONFIG_FIELD(cfg.log.level)),
      bool_key<D>("log.access", COILGUN_CONFIG_FIELD(cfg.log.access)),
      string_key<D>("log.file", COILGUN_CONFIG_FIELD(cfg.log.file), any_path),
      bool_key<D>("metrics.per_agent", COILGUN_CONFIG_FIELD(cfg.per_agent_metrics)),
  };
  for (auto& k : store_keys<D>()) keys.push_back(std::move(k));
  return keys;
}

// A route's timeout: a duration string ("90s") or a number of seconds, from 1 ms to a day.
ConfigResult<milliseconds> route_duration(const toml::value& x) {
  ConfigResult<milliseconds> d =
      x.is_integer()  ? parse_duration(std::to_string(x.as_integer()))
      : x.is_string() ? parse_duration(x.as_string().str)
                      : ConfigResult<milliseconds>(
                            ConfigError{"expected a duration like \"90s\", got " + type_name(x)});
  if (!d.ok()) return d;
  if (*d < milliseconds(1) || *d > milliseconds(86400000)) {
    return ConfigError{"must be from 1ms to 24h"};
  }
  return d;
}

// Reads one [[route]] table into |route|; reports problems at their lines.
void read_route(const toml::value& v, const std::vector<std::string>& known, EdgeRoute& route,
                Errors& errors) {
  if (!v.is_table()) {
    errors.at(v, "route: expected a table ([[route]]), got " + type_name(v));
    return;
  }
  bool have_hosts = false;
  bool have_agent = false;
  bool have_name = false;
  const auto add_host = [&](const std::string& key, const toml::value& h) {
    if (!h.is_string()) {
      errors.at(h, "route." + key + ": expected a string, got " + type_name(h));
      return;
    }
    std::string pattern = to_lower(trim(h.as_string().str));
    if (!pattern.empty() && pattern.back() == '.') pattern.pop_back();
    if (pattern.size() > 2 && pattern.front() == '[' && pattern.back() == ']') {
      pattern = pattern.substr(1, pattern.size() - 2);
    }
    if (std::string why = host_pattern_problem(pattern); !why.empty()) {
      errors.at(h, "route." + key + ": " + why);
      return;
    }
    route.hosts.push_back(std::move(pattern));
  };
  for (const auto& [k, x] : v.as_table()) {
    if (k == "hosts" || k == "host") {
      if (have_hosts) {
        errors.at(x, "route: give either hosts or host, not both");
        continue;
      }
      have_hosts = true;
      if (k == "host") {
        add_host(k, x);
      } else if (!x.is_array()) {
        errors.at(x, "route.hosts: expected an array of strings, got " + type_name(x));
      } else if (x.as_array().empty()) {
        errors.at(x, "route.hosts: must not be empty");
      } else {
        for (const toml::value& h : x.as_array()) add_host(k, h);
      }
    } else if (k == "agent") {
      have_agent = true;
      ConfigResult<std::vector<HostPort>> agents = host_port_list_value(x);
      if (!agents.ok()) {
        errors.at(x, "route.agent: " + agents.error().message);
      } else if (agents->empty()) {
        errors.at(x, "route.agent: must name at least one agent");
      } else {
        route.agents = std::move(agents).value();
      }
    } else if (k == "fallback") {
      ConfigResult<BackendUrl> url =
          x.is_string() ? parse_backend_url(x.as_string().str)
                        : ConfigResult<BackendUrl>(
                              ConfigError{"expected a string like \"http://10.0.0.1:80\", "
                                          "got " +
                                          type_name(x)});
      if (!url.ok()) {
        errors.at(x, "route.fallback: " + url.error().message);
      } else {
        route.fallback = std::move(url).value();
      }
    } else if (k == "request_timeout" || k == "backend_timeout") {
      ConfigResult<milliseconds> d = route_duration(x);
      if (!d.ok()) {
        errors.at(x, "route." + k + ": " + d.error().message);
      } else {
        (k == "request_timeout" ? route.request_timeout : route.backend_timeout) = *d;
      }
    } else if (k == "private_deltas") {
      if (!x.is_boolean()) {
        errors.at(x, "route.private_deltas: expected true or false, got " + type_name(x));
        continue;
      }
      route.private_deltas = x.as_boolean();
    } else if (k == "agent_name") {
      if (!x.is_string()) {
        errors.at(x, "route.agent_name: expected a string, got " + type_name(x));
        continue;
      }
      ConfigResult<std::string> n = agent_name_value(x.as_string().str);
      if (!n.ok()) {
        errors.at(x, "route.agent_name: " + n.error().message);
      } else {
        route.agent_name = std::move(n).value();
        have_name = true;
      }
    } else {
      report_unknown("route." + k, x, known, errors);
    }
  }
  if (!have_hosts) errors.at(v, "route: needs hosts = [\"name\", \"*.suffix\"] or host = \"name\"");
  if (!have_agent) errors.at(v, "route: needs agent = \"HOST:PORT\" or [\"HOST:PORT\", ...]");
  if (route.agents.size() == 1 && !have_name) route.agent_name = route.agents[0].host;
}

// Reads the file's [[route]] array into the draft, checking no host is routed twice.
bool read_routes(EdgeDraft& d, const std::string& key, const toml::value& v, Errors& errors) {
  if (key != "route") return false;
  if (!v.is_array()) {
    errors.at(v, "route: expected an array of tables ([[route]]), got " + type_name(v));
    return true;
  }
  const std::vector<std::string> known = known_names(edge_schema());
  // Pattern -> its route. The line is found only for an error: toml11 counts a location's
  // line from the top of the file, which for every route of 10,000 took seconds (issue #13).
  std::unordered_map<std::string, const toml::value*> seen;
  for (const toml::value& r : v.as_array()) {
    EdgeRoute route;
    read_route(r, known, route, errors);
    for (const std::string& h : route.hosts) {
      auto [it, fresh] = seen.emplace(h, &r);
      if (!fresh) {
        errors.at(r, "route: host " + quote(h) + " is already routed by the route at line " +
                         std::to_string(it->second->location().line()));
      }
    }
    d.cfg.routes.push_back(std::move(route));
  }
  return true;
}

void finish_edge(EdgeDraft& d, const std::map<std::string, Layer>& layers, Errors& errors) {
  const auto layer_of = [&](const char* key) {
    auto it = layers.find(key);
    return it == layers.end() ? Layer::kDefault : it->second;
  };
  if (!d.agents.empty()) {
    std::string name = d.agent_name;
    // An agent_name from a lower level than agent names the address that agent replaced.
    if (layer_of("agent_name") < layer_of("agent")) name.clear();
    if (name.empty() && d.agents.size() == 1) name = d.agents[0].host;
    EdgeRoute route;  // Route options keep their defaults: the default route has no table.
    route.agents = d.agents;
    route.agent_name = std::move(name);
    d.cfg.default_route = std::move(route);
  } else if (!d.agent_name.empty()) {
    errors.add("agent_name is set but agent is not; " + where_to_set("agent", "--agent"));
  }
  for (EdgeRoute& r : d.cfg.routes) {
    if (r.fallback.empty()) r.fallback = d.cfg.fallback;
  }
  if (d.cfg.default_route) d.cfg.default_route->fallback = d.cfg.fallback;
  if (!d.cfg.default_route && d.cfg.routes.empty()) {
    errors.add(
        "no route to any agent: set --agent, COILGUN_AGENT or agent = in the config file, or add "
        "[[route]] tables");
  }
  if (d.cfg.tunnel.backoff_min > d.cfg.tunnel.backoff_max) {
    errors.add("tunnel.backoff_min (" + format_duration(d.cfg.tunnel.backoff_min) +
               ") must not exceed tunnel.backoff_max (" +
               format_duration(d.cfg.tunnel.backoff_max) + ")");
  }
  require_tls(d.cfg.tls, errors);
}

std::vector<FlagDef> edge_flags() {
  return {
      {"--listen", "listen", "HOST:PORT", "Client HTTP listener HOST:PORT (default 0.0.0.0:8080)"},
      {"--agent", "agent", "HOST:PORT",
       "Agent HOST:PORT every Host is routed to; repeat it (or list HOST:PORT,HOST:PORT) to spread "
       "requests over several",
       /*repeat=*/true},
      {"--agent-name", "agent_name", "NAME",
       "Name the agent's certificate must carry (default: host of --agent)"},
      {"--fallback", "fallback", "URL",
       "http(s)://HOST:PORT requests go to directly when no agent has a tunnel up"},
      {"--fallback-ca", "fallback_ca", "FILE",
       "CA (PEM) an https fallback's certificate must chain to (default: the system's)"},
      {"--admin", "admin", "HOST:PORT", "Admin listener HOST:PORT (default 127.0.0.1:9080)"},
      {"--tls-ca", "tls.ca", "FILE", "CA certificate (PEM) agents must be signed by"},
      {"--tls-cert", "tls.cert", "FILE", "This edge's client certificate (PEM)"},
      {"--tls-key", "tls.key", "FILE", "This edge's private key (PEM)"},
      {"--workers", "workers", "N|auto", "Worker loops: N (1..256) or auto (default auto)"},
      {"--log-level", "log.level", "LEVEL", "debug, info, warn or error (default info)"},
  };
}

const Schema<EdgeDraft>& edge_schema() {
  static const Schema<EdgeDraft> s{
      .program = "coilgun-edge",
      .description = "coilgun-edge: accepts clients and tunnels them to Coilgun agents",
      .flags = edge_flags(),
      .keys = edge_keys(),
      .special = read_routes,
      .special_names = {"route.hosts", "route.host", "route.agent", "route.agent_name",
                        "route.fallback", "route.request_timeout", "route.backend_timeout",
                        "route.private_deltas"},
      .finish = finish_edge,
  };
  return s;
}

}  // namespace

ConfigResult<Invocation<EdgeConfig>> load_edge(int argc, const char* const* argv,
                                               const EnvMap& env) {
  return load(edge_schema(), argc, argv, env);
}

ConfigResult<EdgeConfig> parse_edge_toml(std::string_view text, std::string_view file_name) {
  return parse_text(edge_schema(), text, file_name);
}

std::string to_toml(const EdgeConfig& config) {
  std::string out = "# coilgun-edge effective configuration: every key, defaults included.\n";
  EdgeDraft d{config, {}, ""};
  if (config.default_route) {
    d.agents = config.default_route->agents;
    d.agent_name = config.default_route->agent_name;
  }
  print_keys(edge_schema().keys, d, out);
  for (const EdgeRoute& r : config.routes) {
    out += "\n[[route]]\nhosts = [";
    for (size_t i = 0; i < r.hosts.size(); ++i) {
      out += (i ? ", " : "") + quote(r.hosts[i]);
    }
    out += "]\nagent = [";
    for (size_t i = 0; i < r.agents.size(); ++i) {
      out += (i ? ", " : "") + quote(r.agents[i].to_string());
    }
    out += "]\n";
    if (!r.agent_name.empty()) out += "agent_name = " + quote(r.agent_name) + "\n";
    if (!r.fallback.empty()) out += "fallback = " + quote(r.fallback.to_string()) + "\n";
    if (r.request_timeout) {
      out += "request_timeout = " + quote(format_duration(*r.request_timeout)) + "\n";
    }
    if (r.backend_timeout) {
      out += "backend_timeout = " + quote(format_duration(*r.backend_timeout)) + "\n";
    }
    out += std::string("private_deltas = ") + (r.private_deltas ? "true" : "false") + "\n";
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Routing

namespace {

// |host| without port, brackets or trailing dot.
std::string_view route_host(std::string_view host) {
  host = trim(host);
  if (!host.empty() && host.front() == '[') {
    const size_t close = host.find(']');
    return close == std::string_view::npos ? host.substr(1) : host.substr(1, close - 1);
  }
  const size_t colon = host.find(':');
  if (colon != std::string_view::npos && host.find(':', colon + 1) == std::string_view::npos) {
    host = host.substr(0, colon);  // One colon: a port. More: a bare IPv6 literal.
  }
  if (!host.empty() && host.back() == '.') host.remove_suffix(1);
  return host;
}

// True when lower-cased |pattern| "*.suffix" matches |host| (any case): host ends in ".suffix"
// with at least one character before the dot.
bool wildcard_matches(std::string_view pattern, std::string_view host) {
  const std::string_view dot_suffix = pattern.substr(1);  // ".suffix"
  return host.size() > dot_suffix.size() &&
         iequals(host.substr(host.size() - dot_suffix.size()), dot_suffix);
}

}  // namespace

const EdgeRoute* match_route(const EdgeConfig& config, std::string_view host) {
  const std::string_view h = route_host(host);
  const EdgeRoute* best = nullptr;
  size_t best_len = 0;
  if (!h.empty()) {
    for (const EdgeRoute& r : config.routes) {
      for (const std::string& p : r.hosts) {
        if (p.starts_with("*.")) {
          if (p.size() > best_len && wildcard_matches(p, h)) {
            best = &r;
            best_len = p.size();
          }
        } else if (iequals(p, h)) {
          return &r;
        }
      }
    }
  }
  if (best) return best;
  return config.default_route ? &*config.default_route : nullptr;
}

bool https_fallback(const EdgeConfig& config) {
  if (config.default_route && config.default_route->fallback.https) return true;
  return std::any_of(config.routes.begin(), config.routes.end(),
                     [](const EdgeRoute& r) { return r.fallback.https; });
}

}  // namespace coilgun::config
