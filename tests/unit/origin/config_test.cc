// coilgun-origin's configuration: defaults, file values, handshake bounds, to_toml.

#include <catch2/catch.hpp>
#include <string>

#include "tests/unit/common/daemon/config_test_util.h"

using namespace coilgun::config;
using namespace coilgun::config::testing;
using Catch::Matchers::Contains;
using std::chrono::milliseconds;

TEST_CASE("Origin defaults are the documented values", "[config]") {
  auto r = origin(Argv{"--backend", "http://127.0.0.1:8000", "--tls-ca", "ca", "--tls-cert", "c",
                       "--tls-key", "k"});
  REQUIRE(r.ok());
  const OriginConfig& c = r->config;
  CHECK(c.listen == HostPort{"0.0.0.0", 2408});
  CHECK(c.admin == HostPort{"127.0.0.1", 9408});
  CHECK(c.backend == BackendUrl{"127.0.0.1", 8000});
  CHECK(c.namespace_name == "default");
  CHECK(c.workers == kAutoWorkers);
  CHECK(c.tls == TlsConfig{"ca", "c", "k"});
  CHECK(c.delta.max_body == 8 * kMiB);
  CHECK(c.delta.effort == 5);
  CHECK(c.delta.full_level == 3);
  CHECK(c.store.max_bytes == 256 * kMiB);
  CHECK(c.store.versions_per_key == 4);
  CHECK(c.store.memcached_index_fresh == milliseconds(20));
  CHECK(c.backend_pool.max_idle_per_worker == 32);
  CHECK(c.backend_pool.connect_timeout == milliseconds(3000));
  CHECK(c.backend_pool.response_timeout == milliseconds(60000));
  CHECK(c.limits.max_header_bytes == 64 * kKiB);
  CHECK(c.tunnel.ping_interval == milliseconds(10000));
  CHECK(c.tunnel.stream_window == 256 * kKiB);
  CHECK(c.tunnel.connection_window == 16 * kMiB);
  CHECK(c.tunnel.max_streams == 1000);
  CHECK(c.tunnel.handshake_timeout == milliseconds(3000));
  CHECK(c.tunnel.max_pending_per_source == 64);
  CHECK(c.tunnel.max_pending_handshakes == 256);
  CHECK(c.log.level == coilgun::log::Level::kInfo);
  CHECK(c.log.access);
  CHECK(c.drain_timeout == milliseconds(10000));
  CHECK_FALSE(r->check);
  CHECK_FALSE(r->version);
  CHECK_FALSE(r->help);
  CHECK(r->config_path.empty());
  CHECK(r->warnings.empty());
}

TEST_CASE("Origin file values are read", "[config]") {
  TempDir dir;
  const std::string path = dir.write("origin.toml", R"(
listen = "127.0.0.1:0"
admin = "[::1]:9999"
backend = "http://localhost:8081/"
namespace = "shop-eu"
workers = 3
drain_timeout = 2

[tls]
ca = "/etc/coilgun/ca.pem"
cert = "/etc/coilgun/origin.pem"
key = "/etc/coilgun/origin.key"

[delta]
max_body = "2MiB"
effort = 9
full_level = 19

[store]
max_bytes = "1GiB"
versions_per_key = 8

[backend_pool]
max_idle_per_worker = 0
connect_timeout = "250ms"
response_timeout = "1m"

[limits]
max_header_bytes = 32768

[tunnel]
ping_interval = "5s"
stream_window = "512KiB"
connection_window = "32MB"
max_streams = 10
handshake_timeout = "750ms"
max_pending_handshakes = 64

[log]
level = "debug"
access = false
)");
  auto r = origin(Argv{"-c", path});
  REQUIRE(r.ok());
  const OriginConfig& c = r->config;
  CHECK(r->config_path == path);
  CHECK(c.listen == HostPort{"127.0.0.1", 0});
  CHECK(c.admin == HostPort{"::1", 9999});
  CHECK(c.backend == BackendUrl{"localhost", 8081});
  CHECK(c.namespace_name == "shop-eu");
  CHECK(c.workers == 3);
  CHECK(c.drain_timeout == milliseconds(2000));
  CHECK(c.tls ==
        TlsConfig{"/etc/coilgun/ca.pem", "/etc/coilgun/origin.pem", "/etc/coilgun/origin.key"});
  CHECK(c.delta.max_body == 2 * kMiB);
  CHECK(c.delta.effort == 9);
  CHECK(c.delta.full_level == 19);
  CHECK(c.store.max_bytes == kGiB);
  CHECK(c.store.versions_per_key == 8);
  CHECK(c.backend_pool.max_idle_per_worker == 0);
  CHECK(c.backend_pool.connect_timeout == milliseconds(250));
  CHECK(c.backend_pool.response_timeout == milliseconds(60000));
  CHECK(c.limits.max_header_bytes == 32768);
  CHECK(c.tunnel.ping_interval == milliseconds(5000));
  CHECK(c.tunnel.stream_window == 512 * kKiB);
  CHECK(c.tunnel.connection_window == 32000000);
  CHECK(c.tunnel.max_streams == 10);
  CHECK(c.tunnel.handshake_timeout == milliseconds(750));
  CHECK(c.tunnel.max_pending_handshakes == 64);
  CHECK(c.log.level == coilgun::log::Level::kDebug);
  CHECK_FALSE(c.log.access);
}

TEST_CASE("The origin's handshake limits are bounded and errors name file, line and key",
          "[config]") {
  const auto with_tunnel = [](const std::string& lines) {
    return std::string("backend = \"http://a:1\"\n") + kTlsToml + "[tunnel]\n" + lines;
  };
  // Just below and just above the bounds. Lines 1-6 hold backend, [tls] and the [tunnel]
  // header: its keys start at line 7.
  for (const auto& [timeout, limit] : {std::pair{"50ms", "0"}, std::pair{"301s", "1048577"}}) {
    INFO(timeout << ", " << limit);
    auto r = parse_origin_toml(with_tunnel(std::string("handshake_timeout = \"") + timeout +
                                           "\"\nmax_pending_handshakes = " + limit + "\n"),
                               "o.toml");
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(r.error().message,
               Contains(std::string("o.toml:7: tunnel.handshake_timeout: must be "
                                    "between 100ms and 5m, got ") +
                        timeout));
    CHECK_THAT(r.error().message,
               Contains(std::string("o.toml:8: tunnel.max_pending_handshakes: must be "
                                    "between 1 and 1048576, got ") +
                        limit));
  }
  auto typed = parse_origin_toml(with_tunnel("max_pending_handshakes = \"many\"\n"), "o.toml");
  REQUIRE_FALSE(typed.ok());
  CHECK_THAT(typed.error().message,
             Contains("o.toml:7: tunnel.max_pending_handshakes: expected an integer"));

  // The bounds themselves are accepted.
  auto edges = parse_origin_toml(
      with_tunnel("handshake_timeout = \"100ms\"\nmax_pending_handshakes = 1048576\n"), "o.toml");
  REQUIRE(edges.ok());
  CHECK(edges->tunnel.handshake_timeout == milliseconds(100));
  CHECK(edges->tunnel.max_pending_handshakes == 1048576);
  auto longest = parse_origin_toml(with_tunnel("handshake_timeout = \"5m\"\n"), "o.toml");
  REQUIRE(longest.ok());
  CHECK(longest->tunnel.handshake_timeout == milliseconds(300000));

  // The environment sets them too, and a bad value names the variable.
  const Argv argv{"--backend", "http://a:1", "--tls-ca", "a", "--tls-cert", "b", "--tls-key", "c"};
  auto env = origin(argv, {{"COILGUN_TUNNEL_HANDSHAKE_TIMEOUT", "2s"},
                           {"COILGUN_TUNNEL_MAX_PENDING_HANDSHAKES", "8"}});
  REQUIRE(env.ok());
  CHECK(env->config.tunnel.handshake_timeout == milliseconds(2000));
  CHECK(env->config.tunnel.max_pending_handshakes == 8);
  CHECK(env->warnings.empty());
  auto bad_env = origin(argv, {{"COILGUN_TUNNEL_HANDSHAKE_TIMEOUT", "1h"}});
  REQUIRE_FALSE(bad_env.ok());
  CHECK_THAT(bad_env.error().message,
             Contains("environment variable COILGUN_TUNNEL_HANDSHAKE_TIMEOUT: "
                      "must be between 100ms and 5m, got 1h"));

  // The per-source bound belongs to the accepting side: the edge does not know it (its own
  // tunnel.max_pending_handshakes bounds the handshakes it starts).
  auto on_edge = parse_edge_toml(std::string("agent = \"10.0.0.1:2408\"\n") + kTlsToml +
                                     "[tunnel]\nmax_pending_per_source = 4\n",
                                 "e.toml");
  REQUIRE_FALSE(on_edge.ok());
  CHECK_THAT(on_edge.error().message,
             Contains("e.toml:7: unknown key \"tunnel.max_pending_per_source\""));
}

TEST_CASE("to_toml prints every key and round-trips an origin config", "[config]") {
  OriginConfig c;
  c.backend = BackendUrl{"::1", 8080};
  c.tls = TlsConfig{"/p/ca \"q\".pem", "/p/c.pem", "/p/k.pem"};
  c.listen = HostPort{"::", 0};
  c.namespace_name = "blue";
  c.workers = 7;
  c.delta.effort = 2;
  c.store.max_bytes = 123456789;
  c.backend_pool.connect_timeout = milliseconds(1500);
  c.tunnel.stream_window = 3 * kMiB;
  c.tunnel.handshake_timeout = milliseconds(1500);
  c.tunnel.max_pending_handshakes = 7;
  c.log.level = coilgun::log::Level::kError;
  c.log.access = false;
  c.drain_timeout = milliseconds(0);
  const std::string text = to_toml(c);
  INFO(text);
  CHECK_THAT(text, Contains("backend = \"http://[::1]:8080\""));
  CHECK_THAT(text, Contains("[backend_pool]\nmax_idle_per_worker = 32\n"));
  CHECK_THAT(text, Contains("connect_timeout = \"1500ms\""));
  CHECK_THAT(text, Contains("max_bytes = 123456789"));
  CHECK_THAT(text, Contains("workers = 7"));
  CHECK_THAT(text, Contains("handshake_timeout = \"1500ms\"\nmax_pending_handshakes = 7\n"));
  CHECK_THAT(text, Contains("ca = \"/p/ca \\\"q\\\".pem\""));
  auto back = parse_origin_toml(text, "printed.toml");
  REQUIRE(back.ok());
  CHECK(*back == c);

  // Defaults are printed too.
  OriginConfig d;
  d.backend = BackendUrl{"web", 80};
  d.tls = TlsConfig{"a", "b", "c"};
  const std::string dtext = to_toml(d);
  CHECK_THAT(dtext, Contains("workers = \"auto\""));
  CHECK_THAT(dtext, Contains("ping_interval = \"10s\""));
  CHECK_THAT(dtext, Contains("max_body = \"8MiB\""));
  CHECK_THAT(dtext, Contains("handshake_timeout = \"3s\"\nmax_pending_handshakes = 256\n"
                             "max_pending_per_source = 64\n"));
  auto dback = parse_origin_toml(dtext, "printed.toml");
  REQUIRE(dback.ok());
  CHECK(*dback == d);
}

TEST_CASE("An https:// backend takes [backend_tls], checked and printed back", "[config]") {
  auto ok =
      parse_origin_toml(std::string("backend = \"https://App.Internal\"\n") + kTlsToml +
                            "[backend_tls]\nca = \"/etc/app-ca.pem\"\n"
                            "cert = \"/etc/agent-client.pem\"\nkey = \"/etc/agent-client.key\"\n"
                            "name = \"App.Example\"\n",
                        "o.toml");
  REQUIRE(ok.ok());
  CHECK(ok->backend == BackendUrl{"app.internal", 443, true});
  CHECK(ok->backend_tls.ca == "/etc/app-ca.pem");
  CHECK(ok->backend_tls.cert == "/etc/agent-client.pem");
  CHECK(ok->backend_tls.name == "app.example");
  auto back = parse_origin_toml(to_toml(*ok), "printed.toml");
  REQUIRE(back.ok());
  CHECK(*back == *ok);

  const auto error_of = [](const std::string& backend, const std::string& table) {
    auto r = parse_origin_toml(
        "backend = \"" + backend + "\"\n" + kTlsToml + "[backend_tls]\n" + table, "o.toml");
    REQUIRE_FALSE(r.ok());
    return r.error().message;
  };
  CHECK_THAT(error_of("https://a", "cert = \"/c.pem\"\n"), Contains("go together"));
  CHECK_THAT(error_of("http://a", "ca = \"/ca.pem\"\n"), Contains("is not https://"));
  CHECK_THAT(error_of("https://a", "name = \"not a name\"\n"), Contains("backend_tls.name"));
}

TEST_CASE("[backend_health] takes a path, an interval and a timeout within bounds", "[config]") {
  const auto parse = [](const std::string& table) {
    return parse_origin_toml(std::string("backend = \"http://a:1\"\n") + kTlsToml +
                                 "[backend_health]\n" + table,
                             "o.toml");
  };
  auto ok = parse("path = \"/healthz?deep=1\"\ninterval = \"250ms\"\ntimeout = \"100ms\"\n");
  REQUIRE(ok.ok());
  CHECK(ok->backend_health.path == "/healthz?deep=1");
  CHECK(ok->backend_health.interval == milliseconds(250));
  CHECK_FALSE(parse("path = \"healthz\"\n").ok());
  CHECK_FALSE(parse("path = \"/two words\"\n").ok());
  CHECK_FALSE(parse("interval = \"10ms\"\n").ok());
  CHECK_FALSE(parse("timeout = \"2m\"\n").ok());
}
