#include "common/daemon/config.h"

#include <stdlib.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>
#include <vector>

using namespace coilgun::config;
using Catch::Matchers::Contains;
using std::chrono::milliseconds;

namespace {

// A private directory under the system temp dir, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "coilgun-config-XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  // Writes |text| to |name| inside the directory and returns its path.
  std::string write(const std::string& name, const std::string& text) const {
    const std::string p = (path_ / name).string();
    std::ofstream out(p, std::ios::binary);
    out << text;
    return p;
  }
  std::string path(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// An argv for the loaders: argv[0] is the program, then |args|.
class Argv {
 public:
  Argv(std::initializer_list<std::string> args) : strings_{"coilgun-test"} {
    strings_.insert(strings_.end(), args.begin(), args.end());
    for (const std::string& s : strings_) ptrs_.push_back(s.c_str());
    ptrs_.push_back(nullptr);
  }
  int argc() const { return static_cast<int>(strings_.size()); }
  const char* const* argv() const { return ptrs_.data(); }

 private:
  std::vector<std::string> strings_;
  std::vector<const char*> ptrs_;
};

const char* const kTlsToml = "[tls]\nca = \"ca.pem\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n";

ConfigResult<Invocation<OriginConfig>> origin(const Argv& a, const EnvMap& env = {}) {
  return load_origin(a.argc(), a.argv(), env);
}
ConfigResult<Invocation<EdgeConfig>> edge(const Argv& a, const EnvMap& env = {}) {
  return load_edge(a.argc(), a.argv(), env);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Defaults

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

// ---------------------------------------------------------------------------------------------
// File, environment, flags

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
  CHECK(r->default_route->agent == HostPort{"origin.example", 2408});
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

TEST_CASE("The environment overrides the file", "[config]") {
  TempDir dir;
  const std::string path = dir.write(
      "origin.toml", std::string("listen = \"127.0.0.1:1000\"\nbackend = \"http://a:1\"\n"
                                 "[store]\nmax_bytes = \"1MiB\"\n[log]\nlevel = \"warn\"\n") +
                         kTlsToml);
  EnvMap env = {{"COILGUN_LISTEN", "127.0.0.1:2000"},
                {"COILGUN_STORE_MAX_BYTES", "2MiB"},
                {"COILGUN_TLS_CA", "/env/ca.pem"},
                {"COILGUN_LOG_ACCESS", "off"},
                {"COILGUN_BACKEND_POOL_CONNECT_TIMEOUT", "750ms"},
                {"HOME", "/root"}};
  auto r = origin(Argv{"-c", path}, env);
  REQUIRE(r.ok());
  CHECK(r->config.listen == HostPort{"127.0.0.1", 2000});
  CHECK(r->config.store.max_bytes == 2 * kMiB);
  CHECK(r->config.tls.ca == "/env/ca.pem");
  CHECK(r->config.tls.cert == "c.pem");  // From the file: not overridden.
  CHECK_FALSE(r->config.log.access);
  CHECK(r->config.log.level == coilgun::log::Level::kWarn);
  CHECK(r->config.backend_pool.connect_timeout == milliseconds(750));
  CHECK(r->config.backend == BackendUrl{"a", 1});
  CHECK(r->warnings.empty());
}

TEST_CASE("A flag overrides the environment and the file", "[config]") {
  TempDir dir;
  const std::string path =
      dir.write("edge.toml", std::string("listen = \"127.0.0.1:1000\"\nagent = \"10.0.0.1:2408\"\n"
                                         "workers = 2\n[log]\nlevel = \"warn\"\n") +
                                 kTlsToml);
  EnvMap env = {{"COILGUN_LISTEN", "127.0.0.1:2000"},
                {"COILGUN_WORKERS", "4"},
                {"COILGUN_LOG_LEVEL", "error"},
                {"COILGUN_TLS_KEY", "/env/k.pem"}};
  auto r = edge(Argv{"-c", path, "--listen", "127.0.0.1:3000", "--workers", "auto",
                     "--log-level=debug", "--tls-key", "/flag/k.pem"},
                env);
  REQUIRE(r.ok());
  CHECK(r->config.listen == HostPort{"127.0.0.1", 3000});
  CHECK(r->config.workers == kAutoWorkers);
  CHECK(r->config.log.level == coilgun::log::Level::kDebug);
  CHECK(r->config.tls.key == "/flag/k.pem");
  CHECK(r->config.tls.ca == "ca.pem");
}

TEST_CASE("COILGUN_CONFIG names the file when -c is not given", "[config]") {
  TempDir dir;
  const std::string a = dir.write("a.toml", std::string("backend = \"http://a:80\"\n") + kTlsToml);
  const std::string b = dir.write("b.toml", std::string("backend = \"http://b:80\"\n") + kTlsToml);
  auto from_env = origin(Argv{}, {{"COILGUN_CONFIG", a}});
  REQUIRE(from_env.ok());
  CHECK(from_env->config.backend.host == "a");
  CHECK(from_env->config_path == a);
  auto flag_wins = origin(Argv{"--config", b}, {{"COILGUN_CONFIG", a}});
  REQUIRE(flag_wins.ok());
  CHECK(flag_wins->config.backend.host == "b");
}

TEST_CASE("An unknown COILGUN_ variable is a warning, not an error", "[config]") {
  EnvMap env = {{"COILGUN_TUNEL_PING_INTERVAL", "5s"},
                {"COILGUN_BACKEND", "http://127.0.0.1:8080"},
                {"COILGUN_AGENT", "10.0.0.1:2408"},  // An edge key: unknown to the origin.
                {"COILGUN_NAMESPACE", ""},
                {"COILGUN_TLS_CA", "ca"},
                {"COILGUN_TLS_CERT", "c"},
                {"COILGUN_TLS_KEY", "k"}};
  auto r = origin(Argv{}, env);
  REQUIRE(r.ok());
  REQUIRE(r->warnings.size() == 3);
  CHECK_THAT(r->warnings[0], Contains("unknown environment variable COILGUN_AGENT"));
  CHECK_THAT(r->warnings[1], Contains("COILGUN_NAMESPACE is empty"));
  CHECK_THAT(r->warnings[2], Contains("unknown environment variable COILGUN_TUNEL_PING_INTERVAL"));
  CHECK_THAT(r->warnings[2], Contains("did you mean \"COILGUN_TUNNEL_PING_INTERVAL\""));
  CHECK(r->config.namespace_name == "default");
}

TEST_CASE("A bad environment value is an error naming the variable", "[config]") {
  auto r =
      origin(Argv{"--backend", "http://a:1", "--tls-ca", "a", "--tls-cert", "b", "--tls-key", "c"},
             {{"COILGUN_DELTA_EFFORT", "12"}});
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error(), Contains("environment variable COILGUN_DELTA_EFFORT: must be between 1 "
                                 "and 9, got 12"));
  CHECK(r.status().code() == coilgun::Code::kConfig);
}

TEST_CASE("environment_from keeps only COILGUN_ variables", "[config]") {
  const char* envp[] = {"PATH=/bin", "COILGUN_LISTEN=1.2.3.4:5", "COILGUN_X=a=b", "COILGUN_BAD",
                        nullptr};
  EnvMap env = environment_from(envp);
  CHECK(env == EnvMap{{"COILGUN_LISTEN", "1.2.3.4:5"}, {"COILGUN_X", "a=b"}});
  CHECK(environment_from(nullptr).empty());
}

// ---------------------------------------------------------------------------------------------
// Errors in the file

TEST_CASE("An unknown key reports file, line and dotted key", "[config]") {
  const std::string text = std::string("# Edge config\n") +  // 1
                           "listen = \"0.0.0.0:8080\"\n"     // 2
                           "agent = \"10.0.0.1:2408\"\n"     // 3
                           "\n"                              // 4
                           "[tls]\n"                         // 5
                           "ca = \"ca.pem\"\n"               // 6
                           "cert = \"c.pem\"\n"              // 7
                           "key = \"k.pem\"\n"               // 8
                           "\n"                              // 9
                           "[tunel]\n"                       // 10
                           "# how many\n"                    // 11
                           "connections = 2\n"               // 12
                           "\n"                              // 13
                           "[log]\n"                         // 14
                           "levle = \"info\"\n";             // 15
  auto r = parse_edge_toml(text, "edge.toml");
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error(), Contains("edge.toml:12: unknown key \"tunel.connections\" (did you mean "
                                 "\"tunnel.connections\"?)"));
  CHECK_THAT(r.error(), Contains("edge.toml:15: unknown key \"log.levle\""));
  // Sorted by line, one per line.
  CHECK(r.error().find("edge.toml:12") < r.error().find("edge.toml:15"));
}

TEST_CASE("An unknown key in a file given with -c names that file", "[config]") {
  TempDir dir;
  const std::string path =
      dir.write("origin.toml", std::string("backend = \"http://a:1\"\nbogus = 1\n") + kTlsToml);
  auto r = origin(Argv{"-c", path});
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error(), Contains(path + ":2: unknown key \"bogus\""));
}

TEST_CASE("An unknown key inside a route reports its line", "[config]") {
  const std::string text = std::string(kTlsToml) +  // lines 1-4
                           "[[route]]\n"            // 5
                           "hosts = [\"a.example\"]\n"
                           "agent = \"10.0.0.1:2408\"\n"
                           "agnet_name = \"x\"\n";  // 8
  auto r = parse_edge_toml(text, "edge.toml");
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error(), Contains("edge.toml:8: unknown key \"route.agnet_name\""));
}

TEST_CASE("A type error reports file, line and key", "[config]") {
  const std::string text = std::string("backend = \"http://a:1\"\n") +  // 1
                           "listen = 2408\n"                            // 2
                           "[tunnel]\n"                                 // 3
                           "max_streams = \"many\"\n"                   // 4
                           "[log]\n"                                    // 5
                           "access = \"yes\"\n" +                       // 6
                           kTlsToml;
  auto r = parse_origin_toml(text, "origin.toml");
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error(), Contains("origin.toml:2: listen: expected a string like "
                                 "\"127.0.0.1:8080\", got an integer"));
  CHECK_THAT(r.error(), Contains("origin.toml:4: tunnel.max_streams: expected an integer, got a "
                                 "string"));
  CHECK_THAT(r.error(), Contains("origin.toml:6: log.access: expected true or false, got a "
                                 "string"));
}

TEST_CASE("A scalar where a table belongs, and a table where a scalar belongs, are errors",
          "[config]") {
  auto r =
      parse_origin_toml("backend = \"http://a:1\"\ntls = \"x\"\n[listen]\nport = 1\n", "o.toml");
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error(), Contains("o.toml:2: tls: expected a table ([tls]), got a string"));
  CHECK_THAT(r.error(), Contains("o.toml:3: listen: expected a value, got a table"));
}

TEST_CASE("Out-of-range values report their line", "[config]") {
  const std::string text = std::string("backend = \"http://a:1\"\n[delta]\neffort = 12\n") +
                           "[store]\nversions_per_key = 0\nmax_bytes = 0\n" + kTlsToml;
  auto r = parse_origin_toml(text, "o.toml");
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error(), Contains("o.toml:3: delta.effort: must be between 1 and 9, got 12"));
  CHECK_THAT(r.error(), Contains("o.toml:5: store.versions_per_key: must be between 1 and 64"));
  CHECK_THAT(r.error(), Contains("o.toml:6: store.max_bytes: must be between 1 and"));
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
    CHECK_THAT(r.error(), Contains(std::string("o.toml:7: tunnel.handshake_timeout: must be "
                                               "between 100ms and 5m, got ") +
                                   timeout));
    CHECK_THAT(r.error(), Contains(std::string("o.toml:8: tunnel.max_pending_handshakes: must be "
                                               "between 1 and 1048576, got ") +
                                   limit));
  }
  auto typed = parse_origin_toml(with_tunnel("max_pending_handshakes = \"many\"\n"), "o.toml");
  REQUIRE_FALSE(typed.ok());
  CHECK_THAT(typed.error(),
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
  CHECK_THAT(bad_env.error(), Contains("environment variable COILGUN_TUNNEL_HANDSHAKE_TIMEOUT: "
                                       "must be between 100ms and 5m, got 1h"));

  // They belong to the accepting side: the edge does not know them.
  auto on_edge = parse_edge_toml(std::string("agent = \"10.0.0.1:2408\"\n") + kTlsToml +
                                     "[tunnel]\nmax_pending_handshakes = 4\n",
                                 "e.toml");
  REQUIRE_FALSE(on_edge.ok());
  CHECK_THAT(on_edge.error(), Contains("e.toml:7: unknown key \"tunnel.max_pending_handshakes\""));
}

TEST_CASE("A TOML syntax error reports file and line", "[config]") {
  auto r = parse_origin_toml("backend = \"http://a:1\"\nlisten = \n", "o.toml");
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error(), Contains("o.toml:2: "));
  auto dup = parse_origin_toml("workers = 1\nworkers = 2\n", "o.toml");
  REQUIRE_FALSE(dup.ok());
  CHECK_THAT(dup.error(), Contains("o.toml:2: "));
  CHECK_THAT(dup.error(), Contains("already exists"));
}

TEST_CASE("A missing config file is reported with its path", "[config]") {
  TempDir dir;
  auto r = origin(Argv{"-c", dir.path("nope.toml")});
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error(), Contains(dir.path("nope.toml") + ": cannot open config file"));
}

// ---------------------------------------------------------------------------------------------
// Values

TEST_CASE("Durations parse with units and reject nonsense clearly", "[config]") {
  CHECK(*parse_duration("250ms") == milliseconds(250));
  CHECK(*parse_duration("10s") == milliseconds(10000));
  CHECK(*parse_duration("5m") == milliseconds(300000));
  CHECK(*parse_duration("1h") == milliseconds(3600000));
  CHECK(*parse_duration("7") == milliseconds(7000));
  CHECK(*parse_duration(" 3 s ") == milliseconds(3000));
  for (const char* bad : {"", "s", "-5s", "1.5s", "10 parsecs", "5us", "99999999999999999999"}) {
    INFO(bad);
    auto r = parse_duration(bad);
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(r.error(), Contains("invalid duration"));
  }
  CHECK_THAT(parse_duration("10 parsecs").error(), Contains("unknown unit \"parsecs\""));
  CHECK(format_duration(milliseconds(300000)) == "5m");
  CHECK(format_duration(milliseconds(1500)) == "1500ms");
  CHECK(format_duration(milliseconds(0)) == "0s");
}

TEST_CASE("Sizes parse binary and decimal units and reject nonsense clearly", "[config]") {
  CHECK(*parse_size("64KiB") == 64 * 1024);
  CHECK(*parse_size("8MiB") == 8 * kMiB);
  CHECK(*parse_size("1GiB") == kGiB);
  CHECK(*parse_size("500000") == 500000);
  CHECK(*parse_size("64KB") == 64000);
  CHECK(*parse_size("8 mb") == 8000000);
  CHECK(*parse_size("3B") == 3);
  CHECK_THAT(parse_size("64K").error(), Contains("ambiguous unit \"K\""));
  CHECK_THAT(parse_size("1.5MiB").error(), Contains("fractions are not supported"));
  CHECK_THAT(parse_size("lots").error(), Contains("invalid size \"lots\""));
  CHECK_THAT(parse_size("-1").error(), Contains("negative"));
  CHECK_THAT(parse_size("99999999999GiB").error(), Contains("too large"));
  CHECK(format_size(8 * kMiB) == "8MiB");
  CHECK(format_size(64000) == "64000");
}

TEST_CASE("Addresses parse IPv4, bracketed IPv6 and host names", "[config]") {
  CHECK(*parse_host_port("127.0.0.1:8080") == HostPort{"127.0.0.1", 8080});
  CHECK(*parse_host_port("[::1]:443") == HostPort{"::1", 443});
  CHECK(*parse_host_port("[2001:DB8::7]:0") == HostPort{"2001:db8::7", 0});
  CHECK(*parse_host_port("Origin.Example:2408") == HostPort{"origin.example", 2408});
  CHECK(parse_host_port("[::1]:443")->to_string() == "[::1]:443");
  CHECK(parse_host_port("[::1]:443")->is_ipv6());
  CHECK_FALSE(parse_host_port("1.2.3.4:1")->is_ipv6());
}

TEST_CASE("Bad addresses are rejected with clear messages", "[config]") {
  CHECK_THAT(parse_host_port("localhost").error(), Contains("has no port"));
  CHECK_THAT(parse_host_port("::1:80").error(), Contains("IPv6 addresses need brackets"));
  CHECK_THAT(parse_host_port("[::1]").error(), Contains("has no port"));
  CHECK_THAT(parse_host_port("[::1:80").error(), Contains("no closing ']'"));
  CHECK_THAT(parse_host_port("[zz::1]:80").error(), Contains("invalid IPv6 address"));
  CHECK_THAT(parse_host_port("1.2.3.4:65536").error(), Contains("not a number in 0..65535"));
  CHECK_THAT(parse_host_port("1.2.3.4:http").error(), Contains("not a number in 0..65535"));
  CHECK_THAT(parse_host_port("999.1.1.1:80").error(), Contains("invalid IPv4 address"));
  CHECK_THAT(parse_host_port(":80").error(), Contains("has no host"));
  CHECK_THAT(parse_host_port("bad host:80").error(), Contains("invalid character"));
  CHECK_THAT(parse_host_port("-a.example:80").error(), Contains("starts or ends with '-'"));
  CHECK_THAT(parse_host_port("").error(), Contains("empty address"));
}

TEST_CASE("Backend URLs accept http only", "[config]") {
  CHECK(*parse_backend_url("http://127.0.0.1:8080") == BackendUrl{"127.0.0.1", 8080});
  CHECK(*parse_backend_url("http://127.0.0.1:8080/") == BackendUrl{"127.0.0.1", 8080});
  CHECK(*parse_backend_url("HTTP://web") == BackendUrl{"web", 80});
  CHECK(*parse_backend_url("http://[::1]:81") == BackendUrl{"::1", 81});
  CHECK(*parse_backend_url("http://[::1]") == BackendUrl{"::1", 80});
  CHECK(parse_backend_url("http://[::1]:81")->to_string() == "http://[::1]:81");
  CHECK_THAT(parse_backend_url("https://a:443").error(), Contains("https:// backends are not "
                                                                  "supported yet"));
  CHECK_THAT(parse_backend_url("127.0.0.1:8080").error(), Contains("http://HOST:PORT"));
  CHECK_THAT(parse_backend_url("http://a:80/app").error(), Contains("a path, query or fragment"));
  CHECK_THAT(parse_backend_url("http://u:p@a:80").error(), Contains("credentials"));
  CHECK_THAT(parse_backend_url("http://a:0").error(), Contains("port 0"));
  CHECK_THAT(parse_backend_url("http://").error(), Contains("has no host"));
}

TEST_CASE("Workers and log levels parse", "[config]") {
  CHECK(*parse_workers("auto") == kAutoWorkers);
  CHECK(*parse_workers("256") == 256);
  CHECK_FALSE(parse_workers("0").ok());
  CHECK_FALSE(parse_workers("257").ok());
  CHECK_THAT(parse_workers("many").error(), Contains("expected \"auto\" or 1..256"));
  CHECK(resolve_workers(kAutoWorkers, 8) == 8);
  CHECK(resolve_workers(kAutoWorkers, 0) == 1);
  CHECK(resolve_workers(kAutoWorkers, 1000) == 256);
  CHECK(resolve_workers(3, 8) == 3);
  auto loud = origin(Argv{"--log-level", "loud"});
  REQUIRE_FALSE(loud.ok());
  CHECK_THAT(loud.error(), Contains("invalid log level \"loud\": expected debug, info, warn or error"));
  auto r = origin(Argv{"--workers", "0"});
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error(), Contains("--workers: invalid workers \"0\""));
}

TEST_CASE("IPv6 addresses work in files, flags and routes", "[config]") {
  const std::string text = std::string("listen = \"[::]:8443\"\n") + kTlsToml +
                           "[[route]]\nhost = \"[2001:db8::1]\"\nagent = \"[2001:db8::2]:2408\"\n";
  auto r = parse_edge_toml(text, "edge.toml");
  REQUIRE(r.ok());
  CHECK(r->listen == HostPort{"::", 8443});
  REQUIRE(r->routes.size() == 1);
  CHECK(r->routes[0].hosts == std::vector<std::string>{"2001:db8::1"});
  CHECK(r->routes[0].agent == HostPort{"2001:db8::2", 2408});
  CHECK(r->routes[0].agent_name == "2001:db8::2");
  CHECK(match_route(*r, "[2001:DB8::1]:8443") == &r->routes[0]);
  auto f =
      edge(Argv{"--agent", "[::1]:2408", "--tls-ca", "a", "--tls-cert", "b", "--tls-key", "c"});
  REQUIRE(f.ok());
  CHECK(f->config.default_route->agent == HostPort{"::1", 2408});
  CHECK(f->config.default_route->agent_name == "::1");
}

// ---------------------------------------------------------------------------------------------
// Routes

TEST_CASE("The --agent flag sets a default route whose agent_name defaults to its host",
          "[config]") {
  auto r = edge(
      Argv{"--agent", "Origin.Example:2408", "--tls-ca", "a", "--tls-cert", "b", "--tls-key", "c"});
  REQUIRE(r.ok());
  REQUIRE(r->config.default_route);
  CHECK(r->config.default_route->agent == HostPort{"origin.example", 2408});
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
  CHECK(flag_agent->config.default_route->agent == HostPort{"10.9.9.9", 2408});
  CHECK(flag_agent->config.default_route->agent_name == "10.9.9.9");

  auto flag_name = edge(Argv{"-c", path, "--agent-name", "other.example"});
  REQUIRE(flag_name.ok());
  CHECK(flag_name->config.default_route->agent == HostPort{"a.example", 2408});
  CHECK(flag_name->config.default_route->agent_name == "other.example");
}

TEST_CASE("agent_name without an agent is an error", "[config]") {
  auto r =
      edge(Argv{"--agent-name", "x.example", "--tls-ca", "a", "--tls-cert", "b", "--tls-key", "c"});
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error(), Contains("agent_name is set but agent is not"));
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
  CHECK_THAT(r.error(), Contains("edge.toml:6: route.hosts: host pattern \"w*.example\": a "
                                 "wildcard must be a whole leading label"));
  CHECK_THAT(r.error(), Contains("edge.toml:8: route: host \"a.example\" is already routed by "
                                 "the route at line 5"));
  CHECK_THAT(r.error(), Contains("edge.toml:10: route.agent: address \"10.0.0.1\" has no port"));
  CHECK_THAT(r.error(), Contains("edge.toml:12: route.host: host pattern \"b.example:80\" has a "
                                 "port"));
  CHECK_THAT(r.error(), Contains("edge.toml:11: route: needs agent"));
}

TEST_CASE("A route's timeouts and private_deltas are read and checked", "[config]") {
  const std::string good = std::string(kTlsToml) +
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

  const std::string bad = std::string(kTlsToml) +                             // 1-4
                          "[[route]]\nhost = \"a.example\"\nagent = \"10.0.0.1:2408\"\n"  // 5-7
                          "request_timeout = \"2d\"\n"                        // 8
                          "backend_timeout = \"25h\"\n"                       // 9
                          "private_deltas = \"no\"\n";                        // 10
  auto e = parse_edge_toml(bad, "edge.toml");
  REQUIRE_FALSE(e.ok());
  CHECK_THAT(e.error(), Contains("edge.toml:8: route.request_timeout: invalid duration"));
  CHECK_THAT(e.error(), Contains("edge.toml:9: route.backend_timeout: must be from 1ms to 24h"));
  CHECK_THAT(e.error(), Contains("edge.toml:10: route.private_deltas: expected true or false"));
}

TEST_CASE("An edge without any route is rejected", "[config]") {
  auto r = parse_edge_toml(kTlsToml, "edge.toml");
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error(), Contains("no route to any agent"));
}

// ---------------------------------------------------------------------------------------------
// TLS files

TEST_CASE("Missing TLS settings are reported, all at once", "[config]") {
  auto r = origin(Argv{"--backend", "http://a:1", "--tls-cert", "c.pem"});
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error(), Contains("tls.ca is not set; set --tls-ca, COILGUN_TLS_CA or ca = in the "
                                 "[tls] table"));
  CHECK_THAT(r.error(), Contains("tls.key is not set"));
  CHECK(r.error().find("tls.cert") == std::string::npos);
}

TEST_CASE("check_files reports missing, empty and unreadable TLS files", "[config]") {
  TempDir dir;
  const std::string ca = dir.write("ca.pem", "-----BEGIN CERTIFICATE-----\n");
  const std::string cert = dir.write("cert.pem", "");
  const std::string missing = dir.path("missing.key");
  auto bad = check_files(TlsConfig{ca, cert, missing});
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().find("tls.ca") == std::string::npos);
  CHECK_THAT(bad.error(), Contains("tls.cert \"" + cert + "\": is empty"));
  CHECK_THAT(bad.error(), Contains("tls.key \"" + missing + "\": does not exist"));

  auto dir_as_file = check_files(TlsConfig{ca, ca, dir.path("")});
  REQUIRE_FALSE(dir_as_file.ok());
  CHECK_THAT(dir_as_file.error(), Contains("not a regular file"));

  const std::string key = dir.write("key.pem", "-----BEGIN PRIVATE KEY-----\n");
  CHECK(check_files(TlsConfig{ca, key, key}).ok());
  CHECK_THAT(check_files(TlsConfig{}).error(), Contains("tls.ca is not set"));
}

// ---------------------------------------------------------------------------------------------
// Command line

TEST_CASE("The --check, --version and --help flags are recognized", "[config]") {
  auto check = origin(Argv{"--check", "--backend", "http://a:1", "--tls-ca", "a", "--tls-cert", "b",
                           "--tls-key", "c"});
  REQUIRE(check.ok());
  CHECK(check->check);
  CHECK_FALSE(check->help);

  // --check still validates: a broken config is an error.
  CHECK_FALSE(origin(Argv{"--check"}).ok());

  // --version and --help never read the file, so they work with a broken one.
  TempDir dir;
  const std::string broken = dir.write("broken.toml", "this is not toml\n");
  auto version = edge(Argv{"--version", "-c", broken});
  REQUIRE(version.ok());
  CHECK(version->version);

  auto help = edge(Argv{"--help", "-c", broken});
  REQUIRE(help.ok());
  CHECK(help->help);
  CHECK_THAT(help->help_text, Contains("--agent-name"));
  CHECK_THAT(help->help_text, Contains("--tls-key"));
  CHECK_THAT(help->help_text, Contains("--check"));
  CHECK_THAT(help->help_text, Contains("COILGUN_"));

  auto short_help = origin(Argv{"-h"});
  REQUIRE(short_help.ok());
  CHECK(short_help->help);
  CHECK_THAT(short_help->help_text, Contains("--backend"));
}

TEST_CASE("An unknown flag or a stray argument is an error", "[config]") {
  auto r = origin(Argv{"--frobnicate"});
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error(), Contains("--frobnicate"));
  CHECK_FALSE(edge(Argv{"stray"}).ok());
  // --backend is the origin's flag, --agent the edge's.
  CHECK_FALSE(edge(Argv{"--backend", "http://a:1"}).ok());
  CHECK_FALSE(origin(Argv{"--agent", "a:1"}).ok());
}

TEST_CASE("A bad flag value names the flag", "[config]") {
  auto r = edge(Argv{"--agent", "10.0.0.1", "--listen", "[::1]", "--tls-ca", "a", "--tls-cert", "b",
                     "--tls-key", "c"});
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error(), Contains("--agent: address \"10.0.0.1\" has no port"));
  CHECK_THAT(r.error(), Contains("--listen: address \"[::1]\" has no port"));
}

// ---------------------------------------------------------------------------------------------
// Printing

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

TEST_CASE("to_toml round-trips an edge config with routes", "[config]") {
  EdgeConfig c;
  c.tls = TlsConfig{"a", "b", "c"};
  // Built member by member: brace-initialised temporaries make GCC 12 warn falsely.
  EdgeRoute one;
  one.hosts = {"www.example.com", "*.example.com"};
  one.agent = *parse_host_port("10.0.0.1:2408");
  one.agent_name = "one";
  c.routes.push_back(one);
  EdgeRoute two;
  two.hosts = {"2001:db8::5"};
  two.agent = *parse_host_port("[2001:db8::6]:1");
  two.agent_name = "2001:db8::6";
  two.request_timeout = milliseconds(300000);
  two.backend_timeout = milliseconds(90000);
  two.private_deltas = false;
  c.routes.push_back(two);
  EdgeRoute fallback;
  fallback.agent = *parse_host_port("fallback.internal:2408");
  fallback.agent_name = "fallback-name.internal";
  c.default_route = fallback;
  c.tunnel.backoff_max = milliseconds(60000);
  c.limits.request_timeout = milliseconds(7200000);
  const std::string text = to_toml(c);
  INFO(text);
  CHECK_THAT(text, Contains("agent = \"fallback.internal:2408\""));
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

TEST_CASE("Secret keys are recognised by name", "[config]") {
  CHECK(is_secret_key("memcached.password"));
  CHECK(is_secret_key("admin.API_TOKEN"));
  CHECK_FALSE(is_secret_key("tls.key"));
  CHECK_FALSE(is_secret_key("listen"));
}

TEST_CASE("A file that is not UTF-8 or holds control characters is refused before parsing",
          "[config]") {
  // Invalid UTF-8 in a literal-string key made toml11 read past its buffer (config_loader_fuzz).
  const std::string overread = "z'[\xff\xff\xff\xffz['\xff\xff\xff$\"";
  auto r = parse_origin_toml(overread, "o.toml");
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error(), Contains("o.toml:1: not a TOML document"));
  auto nul = parse_origin_toml(std::string("backend = \"http://a:1\"\n\nx = 1\0\n", 31), "o.toml");
  REQUIRE_FALSE(nul.ok());
  CHECK_THAT(nul.error(), Contains("o.toml:3:"));
  for (const char* bad : {"a = \"\xc0\xaf\"\n", "a = \"\xed\xa0\x80\"\n", "a = \"\xf4\x90\x80\x80\"\n",
                          "a = \"\xe2\x82\"\n"}) {
    CHECK_FALSE(parse_origin_toml(bad, "o.toml").ok());  // Overlong, surrogate, too high, cut.
  }
  // Nesting that made toml11 recurse until the stack overflowed (config_loader_fuzz).
  auto deep = parse_origin_toml("x = " + std::string(100000, '['), "o.toml");
  REQUIRE_FALSE(deep.ok());
  CHECK_THAT(deep.error(), Contains("o.toml:1: not a TOML document: arrays or tables nested"));
  // Brackets in strings and comments are not nesting.
  auto quoted = parse_origin_toml(std::string("# [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n") +
                                      "backend = \"http://a:1\"\n" + kTlsToml,
                                  "o.toml");
  CHECK(quoted.ok());
  // Valid UTF-8 of every length still loads.
  auto ok = parse_origin_toml(
      std::string("# caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\tend\r\nbackend = \"http://a:1\"\n") +
          kTlsToml,
      "o.toml");
  CHECK(ok.ok());
}
