// coilgun-edge's configuration: defaults, routes, the default route's agent_name, to_toml.

#include <catch2/catch.hpp>
#include <string>

#include "tests/unit/common/daemon/config_test_util.h"

using namespace coilgun::config;
using namespace coilgun::config::testing;
using Catch::Matchers::Contains;
using std::chrono::milliseconds;

TEST_CASE("Edge defaults are the documented values", "[config]") {
  auto r =
      edge(Argv{"--agent", "10.0.0.7:2408", "--tls-ca", "ca", "--tls-cert", "c", "--tls-key", "k"});
  REQUIRE(r.ok());
  const EdgeConfig& c = r->config;
  CHECK(c.listen == HostPort{"0.0.0.0", 8080});
  CHECK(c.admin == HostPort{"127.0.0.1", 9080});
  CHECK(c.routes.empty());
  CHECK(c.workers == kAutoWorkers);
  CHECK(c.tunnel.connections == 2);
  CHECK(c.tunnel.connect_timeout == milliseconds(2000));
  CHECK(c.tunnel.ping_interval == milliseconds(10000));
  CHECK(c.tunnel.backoff_min == milliseconds(100));
  CHECK(c.tunnel.backoff_max == milliseconds(5000));
  CHECK(c.tunnel.stream_window == 1 * kMiB);
  CHECK(c.tunnel.connection_window == 16 * kMiB);
  CHECK(c.store.max_bytes == 256 * kMiB);
  CHECK(c.store.versions_per_key == 4);
  CHECK(c.limits.max_header_bytes == 64 * kKiB);
  CHECK(c.limits.max_coded_body == 64 * kMiB);
  CHECK(c.limits.client_idle_timeout == milliseconds(60000));
  CHECK(c.limits.request_timeout == milliseconds(60000));
  CHECK(c.log.level == coilgun::log::Level::kInfo);
  CHECK(c.log.access);
  CHECK(c.drain_timeout == milliseconds(10000));
}

TEST_CASE("Edge file values are read", "[config]") {
  const std::string text = R"(listen = "0.0.0.0:80"
agent = "origin.example:2408"
workers = "auto"

[tunnel]
connections = 4
backoff_min = "50ms"
backoff_max = "10s"

[limits]
max_coded_body = "128MiB"
client_idle_timeout = "2m"
request_timeout = 90
)";
  auto r = parse_edge_toml(text + kTlsToml, "edge.toml");
  REQUIRE(r.ok());
  CHECK(r->listen == HostPort{"0.0.0.0", 80});
  REQUIRE(r->default_route);
  CHECK(r->default_route->agents == std::vector<HostPort>{HostPort{"origin.example", 2408}});
  CHECK(r->default_route->agent_name == "origin.example");
  CHECK(r->default_route->hosts.empty());
  CHECK(r->workers == kAutoWorkers);
  CHECK(r->tunnel.connections == 4);
  CHECK(r->tunnel.backoff_min == milliseconds(50));
  CHECK(r->tunnel.backoff_max == milliseconds(10000));
  CHECK(r->limits.max_coded_body == 128 * kMiB);
  CHECK(r->limits.client_idle_timeout == milliseconds(120000));
  CHECK(r->limits.request_timeout == milliseconds(90000));
  CHECK(r->tls == TlsConfig{"ca.pem", "c.pem", "k.pem"});
}

TEST_CASE("An unknown key inside a route reports its line", "[config]") {
  const std::string text = std::string(kTlsToml) +  // lines 1-4
                           "[[route]]\n"            // 5
                           "hosts = [\"a.example\"]\n"
                           "agent = \"10.0.0.1:2408\"\n"
                           "agnet_name = \"x\"\n";  // 8
  auto r = parse_edge_toml(text, "edge.toml");
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error().message, Contains("edge.toml:8: unknown key \"route.agnet_name\""));
}

TEST_CASE("IPv6 addresses work in files, flags and routes", "[config]") {
  const std::string text = std::string("listen = \"[::]:8443\"\n") + kTlsToml +
                           "[[route]]\nhost = \"[2001:db8::1]\"\nagent = \"[2001:db8::2]:2408\"\n";
  auto r = parse_edge_toml(text, "edge.toml");
  REQUIRE(r.ok());
  CHECK(r->listen == HostPort{"::", 8443});
  REQUIRE(r->routes.size() == 1);
  CHECK(r->routes[0].hosts == std::vector<std::string>{"2001:db8::1"});
  CHECK(r->routes[0].agents == std::vector<HostPort>{HostPort{"2001:db8::2", 2408}});
  CHECK(r->routes[0].agent_name == "2001:db8::2");
  CHECK(match_route(*r, "[2001:DB8::1]:8443") == &r->routes[0]);
  auto f =
      edge(Argv{"--agent", "[::1]:2408", "--tls-ca", "a", "--tls-cert", "b", "--tls-key", "c"});
  REQUIRE(f.ok());
  CHECK(f->config.default_route->agents == std::vector<HostPort>{HostPort{"::1", 2408}});
  CHECK(f->config.default_route->agent_name == "::1");
}

TEST_CASE("The --agent flag sets a default route whose agent_name defaults to its host",
          "[config]") {
  auto r = edge(
      Argv{"--agent", "Origin.Example:2408", "--tls-ca", "a", "--tls-cert", "b", "--tls-key", "c"});
  REQUIRE(r.ok());
  REQUIRE(r->config.default_route);
  CHECK(r->config.default_route->agents == std::vector<HostPort>{HostPort{"origin.example", 2408}});
  CHECK(r->config.default_route->agent_name == "origin.example");
  CHECK(match_route(r->config, "anything.example:8080") == &*r->config.default_route);
  CHECK(match_route(r->config, "") == &*r->config.default_route);

  auto ip = edge(Argv{"--agent", "10.1.2.3:2408", "--agent-name", "agent.internal", "--tls-ca", "a",
                      "--tls-cert", "b", "--tls-key", "c"});
  REQUIRE(ip.ok());
  CHECK(ip->config.default_route->agent_name == "agent.internal");
}

TEST_CASE("The --agent flag replaces the file's agent and the agent_name that went with it",
          "[config]") {
  TempDir dir;
  const std::string path = dir.write(
      "edge.toml",
      std::string("agent = \"a.example:2408\"\nagent_name = \"cert.a.example\"\n") + kTlsToml);
  auto file_only = edge(Argv{"-c", path});
  REQUIRE(file_only.ok());
  CHECK(file_only->config.default_route->agent_name == "cert.a.example");

  auto flag_agent = edge(Argv{"-c", path, "--agent", "10.9.9.9:2408"});
  REQUIRE(flag_agent.ok());
  CHECK(flag_agent->config.default_route->agents ==
        std::vector<HostPort>{HostPort{"10.9.9.9", 2408}});
  CHECK(flag_agent->config.default_route->agent_name == "10.9.9.9");

  auto flag_name = edge(Argv{"-c", path, "--agent-name", "other.example"});
  REQUIRE(flag_name.ok());
  CHECK(flag_name->config.default_route->agents ==
        std::vector<HostPort>{HostPort{"a.example", 2408}});
  CHECK(flag_name->config.default_route->agent_name == "other.example");
}

TEST_CASE(
    "A route names several agents: a TOML array, --agent repeated or a comma list, "
    "COILGUN_AGENT",
    "[config]") {
  const std::vector<HostPort> both{{"a.example", 2408}, {"10.0.0.2", 2408}};
  TempDir dir;
  const std::string path = dir.write(
      "edge.toml", std::string("agent = [\"a.example:2408\", \"10.0.0.2:2408\"]\n") + kTlsToml +
                       "[[route]]\nhost = \"shop.example\"\n"
                       "agent = [\"s1.internal:2408\", \"s2.internal:2408\"]\n"
                       "agent_name = \"shop-agent.internal\"\n");
  auto file = edge(Argv{"-c", path});
  REQUIRE(file.ok());
  CHECK(file->config.default_route->agents == both);
  // Several agents and no agent_name: each agent's certificate carries its own host.
  CHECK(file->config.default_route->agent_name.empty());
  CHECK(file->config.default_route->name_for(both[1]) == "10.0.0.2");
  const EdgeRoute& shop = file->config.routes.at(0);
  CHECK(shop.agents.size() == 2);
  CHECK(shop.name_for(shop.agents[1]) == "shop-agent.internal");

  auto repeated = edge(Argv{"--agent", "a.example:2408", "--agent", "10.0.0.2:2408", "--tls-ca",
                            "a", "--tls-cert", "b", "--tls-key", "c"});
  REQUIRE(repeated.ok());
  CHECK(repeated->config.default_route->agents == both);
  auto listed = edge(Argv{"--agent", "a.example:2408,10.0.0.2:2408", "--tls-ca", "a", "--tls-cert",
                          "b", "--tls-key", "c"});
  REQUIRE(listed.ok());
  CHECK(listed->config.default_route->agents == both);
  auto env = edge(Argv{"--tls-ca", "a", "--tls-cert", "b", "--tls-key", "c"},
                  {{"COILGUN_AGENT", "a.example:2408, 10.0.0.2:2408"}});
  REQUIRE(env.ok());
  CHECK(env->config.default_route->agents == both);

  auto twice = edge(Argv{"--agent", "a.example:2408", "--agent", "a.example:2408", "--tls-ca", "a",
                         "--tls-cert", "b", "--tls-key", "c"});
  REQUIRE_FALSE(twice.ok());
  CHECK_THAT(twice.error().message,
             Contains("--agent: address \"a.example:2408\" is listed twice"));
  auto empty = parse_edge_toml(
      std::string(kTlsToml) + "[[route]]\nhost = \"x.example\"\nagent = []\n", "e.toml");
  REQUIRE_FALSE(empty.ok());
  CHECK_THAT(empty.error().message, Contains("route.agent: must name at least one agent"));
}

TEST_CASE("fallback: per route, else the top-level one; http:// or https://", "[config]") {
  auto c = parse_edge_toml(std::string("agent = \"a:1\"\nfallback = \"http://origin.internal\"\n") +
                               kTlsToml +
                               "[[route]]\nhost = \"own.example\"\nagent = \"b:1\"\n"
                               "fallback = \"http://10.0.0.9:8080/\"\n"
                               "[[route]]\nhost = \"inherits.example\"\nagent = \"c:1\"\n",
                           "e.toml");
  REQUIRE(c.ok());
  CHECK(c->default_route->fallback == BackendUrl{"origin.internal", 80});
  CHECK(c->routes.at(0).fallback == BackendUrl{"10.0.0.9", 8080});
  CHECK(c->routes.at(1).fallback == BackendUrl{"origin.internal", 80});
  auto back = parse_edge_toml(to_toml(*c), "printed.toml");
  REQUIRE(back.ok());
  CHECK(*back == *c);

  auto none = parse_edge_toml(std::string("agent = \"a:1\"\n") + kTlsToml, "e.toml");
  REQUIRE(none.ok());
  CHECK(none->default_route->fallback.empty());

  CHECK_FALSE(https_fallback(*c));

  auto https = parse_edge_toml(std::string("fallback_ca = \"/etc/origin-ca.pem\"\n") + kTlsToml +
                                   "[[route]]\nhost = \"x.example\"\nagent = \"a:1\"\n"
                                   "fallback = \"https://origin.internal\"\n",
                               "e.toml");
  REQUIRE(https.ok());
  CHECK(https->routes.at(0).fallback == BackendUrl{"origin.internal", 443, true});
  CHECK(https->fallback_ca == "/etc/origin-ca.pem");
  CHECK(https_fallback(*https));
  auto https_back = parse_edge_toml(to_toml(*https), "printed.toml");
  REQUIRE(https_back.ok());
  CHECK(*https_back == *https);
  auto bad = parse_edge_toml(std::string(kTlsToml) +
                                 "[[route]]\nhost = \"x.example\"\nagent = \"a:1\"\n"
                                 "fallback = \"ftp://origin.internal\"\n",
                             "e.toml");
  REQUIRE_FALSE(bad.ok());
  CHECK_THAT(bad.error().message, Contains("route.fallback"));
  CHECK_THAT(bad.error().message, Contains("http(s)://HOST:PORT"));

  auto flag = edge(Argv{"--agent", "a:1", "--fallback", "https://127.0.0.1:81", "--fallback-ca",
                        "ca.pem", "--tls-ca", "a", "--tls-cert", "b", "--tls-key", "c"});
  REQUIRE(flag.ok());
  CHECK(flag->config.default_route->fallback == BackendUrl{"127.0.0.1", 81, true});
  CHECK(flag->config.fallback_ca == "ca.pem");
}

TEST_CASE("agent_name without an agent is an error", "[config]") {
  auto r =
      edge(Argv{"--agent-name", "x.example", "--tls-ca", "a", "--tls-cert", "b", "--tls-key", "c"});
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error().message, Contains("agent_name is set but agent is not"));
}

TEST_CASE("Routes with exact names and wildcards are resolved by match_route", "[config]") {
  const std::string text = std::string("agent = \"10.0.0.9:2408\"\n") + kTlsToml + R"(

[[route]]
hosts = ["www.example.com", "*.example.com"]
agent = "10.0.0.1:2408"

[[route]]
hosts = ["*.shop.example.com", "Example.COM"]
agent = "10.0.0.2:2408"
agent_name = "shop-agent.internal"

[[route]]
host = "api.shop.example.com"
agent = "10.0.0.3:2408"
)";
  auto r = parse_edge_toml(text, "edge.toml");
  REQUIRE(r.ok());
  const EdgeConfig& c = *r;
  REQUIRE(c.routes.size() == 3);
  CHECK(c.routes[0].agent_name == "10.0.0.1");
  CHECK(c.routes[1].agent_name == "shop-agent.internal");
  CHECK(c.routes[1].hosts == std::vector<std::string>{"*.shop.example.com", "example.com"});
  CHECK(match_route(c, "www.example.com") == &c.routes[0]);
  CHECK(match_route(c, "img.example.com") == &c.routes[0]);
  CHECK(match_route(c, "a.b.example.com") == &c.routes[0]);
  CHECK(match_route(c, "EXAMPLE.com:8080") == &c.routes[1]);      // Exact, case and port ignored.
  CHECK(match_route(c, "eu.shop.example.com") == &c.routes[1]);   // Longest suffix wins.
  CHECK(match_route(c, "api.shop.example.com") == &c.routes[2]);  // Exact beats wildcard.
  CHECK(match_route(c, "www.example.com.") == &c.routes[0]);      // Trailing dot.
  CHECK(match_route(c, "other.org") == &*c.default_route);
  CHECK(match_route(c, "xexample.com") == &*c.default_route);  // Not a label boundary.

  EdgeConfig no_default = c;
  no_default.default_route.reset();
  CHECK(match_route(no_default, "other.org") == nullptr);
  CHECK(match_route(no_default, "") == nullptr);
}

TEST_CASE("Bad routes are reported at their lines", "[config]") {
  const std::string text = std::string(kTlsToml) +                      // 1-4
                           "[[route]]\n"                                // 5
                           "hosts = [\"a.example\", \"w*.example\"]\n"  // 6
                           "agent = \"10.0.0.1:2408\"\n"                // 7
                           "[[route]]\n"                                // 8
                           "hosts = [\"a.example\"]\n"                  // 9
                           "agent = \"10.0.0.1\"\n"                     // 10
                           "[[route]]\n"                                // 11
                           "host = \"b.example:80\"\n";                 // 12
  auto r = parse_edge_toml(text, "edge.toml");
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error().message, Contains("edge.toml:6: route.hosts: host pattern \"w*.example\": a "
                                         "wildcard must be a whole leading label"));
  CHECK_THAT(r.error().message,
             Contains("edge.toml:8: route: host \"a.example\" is already routed by "
                      "the route at line 5"));
  CHECK_THAT(r.error().message,
             Contains("edge.toml:10: route.agent: address \"10.0.0.1\" has no port"));
  CHECK_THAT(r.error().message,
             Contains("edge.toml:12: route.host: host pattern \"b.example:80\" has a "
                      "port"));
  CHECK_THAT(r.error().message, Contains("edge.toml:11: route: needs agent"));
}

TEST_CASE("A route's timeouts and private_deltas are read and checked", "[config]") {
  const std::string good =
      std::string(kTlsToml) +
      "[[route]]\nhost = \"a.example\"\nagent = \"10.0.0.1:2408\"\n"
      "request_timeout = \"5m\"\nbackend_timeout = 90\nprivate_deltas = false\n"
      "[[route]]\nhost = \"b.example\"\nagent = \"10.0.0.1:2408\"\n";
  auto r = parse_edge_toml(good, "edge.toml");
  REQUIRE(r.ok());
  const EdgeRoute* a = match_route(*r, "a.example");
  REQUIRE(a != nullptr);
  CHECK(a->request_timeout == milliseconds(300000));
  CHECK(a->backend_timeout == milliseconds(90000));
  CHECK_FALSE(a->private_deltas);
  const EdgeRoute* b = match_route(*r, "b.example");
  REQUIRE(b != nullptr);
  CHECK_FALSE(b->request_timeout.has_value());
  CHECK_FALSE(b->backend_timeout.has_value());
  CHECK(b->private_deltas);

  const std::string bad = std::string(kTlsToml) +                                         // 1-4
                          "[[route]]\nhost = \"a.example\"\nagent = \"10.0.0.1:2408\"\n"  // 5-7
                          "request_timeout = \"2d\"\n"                                    // 8
                          "backend_timeout = \"25h\"\n"                                   // 9
                          "private_deltas = \"no\"\n";                                    // 10
  auto e = parse_edge_toml(bad, "edge.toml");
  REQUIRE_FALSE(e.ok());
  CHECK_THAT(e.error().message, Contains("edge.toml:8: route.request_timeout: invalid duration"));
  CHECK_THAT(e.error().message,
             Contains("edge.toml:9: route.backend_timeout: must be from 1ms to 24h"));
  CHECK_THAT(e.error().message,
             Contains("edge.toml:10: route.private_deltas: expected true or false"));
}

TEST_CASE("An edge without any route is rejected", "[config]") {
  auto r = parse_edge_toml(kTlsToml, "edge.toml");
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error().message, Contains("no route to any agent"));
}

TEST_CASE("to_toml round-trips an edge config with routes", "[config]") {
  EdgeConfig c;
  c.tls = TlsConfig{"a", "b", "c"};
  // Built member by member: brace-initialised temporaries make GCC 12 warn falsely.
  EdgeRoute one;
  one.hosts = {"www.example.com", "*.example.com"};
  one.agents = {*parse_host_port("10.0.0.1:2408")};
  one.agent_name = "one";
  c.routes.push_back(one);
  EdgeRoute two;
  two.hosts = {"2001:db8::5"};
  two.agents = {*parse_host_port("[2001:db8::6]:1")};
  two.agent_name = "2001:db8::6";
  two.request_timeout = milliseconds(300000);
  two.backend_timeout = milliseconds(90000);
  two.private_deltas = false;
  c.routes.push_back(two);
  EdgeRoute fallback;
  fallback.agents = {*parse_host_port("fallback.internal:2408")};
  fallback.agent_name = "fallback-name.internal";
  c.default_route = fallback;
  c.tunnel.backoff_max = milliseconds(60000);
  c.limits.request_timeout = milliseconds(7200000);
  const std::string text = to_toml(c);
  INFO(text);
  CHECK_THAT(text, Contains("agent = [\"fallback.internal:2408\"]"));
  CHECK_THAT(text, Contains("request_timeout = \"2h\""));
  CHECK_THAT(text, Contains("[[route]]\nhosts = [\"www.example.com\", \"*.example.com\"]"));
  auto back = parse_edge_toml(text, "printed.toml");
  REQUIRE(back.ok());
  CHECK(*back == c);

  // Without a default route the top-level agent is printed as a comment.
  c.default_route.reset();
  const std::string no_default = to_toml(c);
  CHECK_THAT(no_default, Contains("# agent is not set"));
  auto back2 = parse_edge_toml(no_default, "printed.toml");
  REQUIRE(back2.ok());
  CHECK(*back2 == c);
}
