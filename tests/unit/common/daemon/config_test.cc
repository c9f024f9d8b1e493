// The configuration loader (common/daemon/config_schema.h) through both daemons' schemas:
// precedence, the environment, errors with file and line, flags, refused documents.

#include <catch2/catch.hpp>
#include <string>

#include "tests/unit/common/daemon/config_test_util.h"

using namespace coilgun::config;
using namespace coilgun::config::testing;
using Catch::Matchers::Contains;
using std::chrono::milliseconds;

TEST_CASE("The environment overrides the file", "[config]") {
  TempDir dir;
  const std::string path = dir.write(
      "origin.toml", std::string("listen = \"127.0.0.1:1000\"\nbackend = \"http://a:1\"\n"
                                 "[store]\nmax_bytes = \"1MiB\"\n[log]\nlevel = \"warn\"\n") +
                         kTlsToml);
  EnvMap env = {{"COILGUN_LISTEN", "127.0.0.1:2000"},
                {"COILGUN_STORE_MAX_BYTES", "2MiB"},
                {"COILGUN_STORE_MEMCACHED_INDEX_FRESH", "0ms"},
                {"COILGUN_TLS_CA", "/env/ca.pem"},
                {"COILGUN_LOG_ACCESS", "off"},
                {"COILGUN_BACKEND_POOL_CONNECT_TIMEOUT", "750ms"},
                {"HOME", "/root"}};
  auto r = origin(Argv{"-c", path}, env);
  REQUIRE(r.ok());
  CHECK(r->config.listen == HostPort{"127.0.0.1", 2000});
  CHECK(r->config.store.max_bytes == 2 * kMiB);
  CHECK(r->config.store.memcached_index_fresh == milliseconds(0));  // 0: the rule off.
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
  CHECK_THAT(r.error().message,
             Contains("environment variable COILGUN_DELTA_EFFORT: must be between 1 "
                      "and 9, got 12"));
}

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
  CHECK_THAT(r.error().message,
             Contains("edge.toml:12: unknown key \"tunel.connections\" (did you mean "
                      "\"tunnel.connections\"?)"));
  CHECK_THAT(r.error().message, Contains("edge.toml:15: unknown key \"log.levle\""));
  // Sorted by line, one per line.
  CHECK(r.error().message.find("edge.toml:12") < r.error().message.find("edge.toml:15"));
}

TEST_CASE("An unknown key in a file given with -c names that file", "[config]") {
  TempDir dir;
  const std::string path =
      dir.write("origin.toml", std::string("backend = \"http://a:1\"\nbogus = 1\n") + kTlsToml);
  auto r = origin(Argv{"-c", path});
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error().message, Contains(path + ":2: unknown key \"bogus\""));
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
  CHECK_THAT(r.error().message, Contains("origin.toml:2: listen: expected a string like "
                                         "\"127.0.0.1:8080\", got an integer"));
  CHECK_THAT(r.error().message,
             Contains("origin.toml:4: tunnel.max_streams: expected an integer, got a "
                      "string"));
  CHECK_THAT(r.error().message, Contains("origin.toml:6: log.access: expected true or false, got a "
                                         "string"));
}

TEST_CASE("A scalar where a table belongs, and a table where a scalar belongs, are errors",
          "[config]") {
  auto r =
      parse_origin_toml("backend = \"http://a:1\"\ntls = \"x\"\n[listen]\nport = 1\n", "o.toml");
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error().message, Contains("o.toml:2: tls: expected a table ([tls]), got a string"));
  CHECK_THAT(r.error().message, Contains("o.toml:3: listen: expected a value, got a table"));
}

TEST_CASE("Out-of-range values report their line", "[config]") {
  const std::string text = std::string("backend = \"http://a:1\"\n[delta]\neffort = 12\n") +
                           "[store]\nversions_per_key = 0\nmax_bytes = 0\n" + kTlsToml;
  auto r = parse_origin_toml(text, "o.toml");
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error().message,
             Contains("o.toml:3: delta.effort: must be between 1 and 9, got 12"));
  CHECK_THAT(r.error().message,
             Contains("o.toml:5: store.versions_per_key: must be between 1 and 64"));
  CHECK_THAT(r.error().message, Contains("o.toml:6: store.max_bytes: must be between 1 and"));
}

TEST_CASE("A TOML syntax error reports file and line", "[config]") {
  auto r = parse_origin_toml("backend = \"http://a:1\"\nlisten = \n", "o.toml");
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error().message, Contains("o.toml:2: "));
  auto dup = parse_origin_toml("workers = 1\nworkers = 2\n", "o.toml");
  REQUIRE_FALSE(dup.ok());
  CHECK_THAT(dup.error().message, Contains("o.toml:2: "));
  CHECK_THAT(dup.error().message, Contains("already exists"));
}

TEST_CASE("A missing config file is reported with its path", "[config]") {
  TempDir dir;
  auto r = origin(Argv{"-c", dir.path("nope.toml")});
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error().message, Contains(dir.path("nope.toml") + ": cannot open config file"));
}

TEST_CASE("Missing TLS settings are reported, all at once", "[config]") {
  auto r = origin(Argv{"--backend", "http://a:1", "--tls-cert", "c.pem"});
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error().message,
             Contains("tls.ca is not set; set --tls-ca, COILGUN_TLS_CA or ca = in the "
                      "[tls] table"));
  CHECK_THAT(r.error().message, Contains("tls.key is not set"));
  CHECK(r.error().message.find("tls.cert") == std::string::npos);
}

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
  CHECK_THAT(r.error().message, Contains("--frobnicate"));
  CHECK_FALSE(edge(Argv{"stray"}).ok());
  // --backend is the origin's flag, --agent the edge's.
  CHECK_FALSE(edge(Argv{"--backend", "http://a:1"}).ok());
  CHECK_FALSE(origin(Argv{"--agent", "a:1"}).ok());
}

TEST_CASE("A bad flag value names the flag", "[config]") {
  auto r = edge(Argv{"--agent", "10.0.0.1", "--listen", "[::1]", "--tls-ca", "a", "--tls-cert", "b",
                     "--tls-key", "c"});
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error().message, Contains("--agent: address \"10.0.0.1\" has no port"));
  CHECK_THAT(r.error().message, Contains("--listen: address \"[::1]\" has no port"));
}

TEST_CASE("A file that is not UTF-8 or holds control characters is refused before parsing",
          "[config]") {
  // Invalid UTF-8 in a literal-string key made toml11 read past its buffer (config_loader_fuzz).
  const std::string overread = "z'[\xff\xff\xff\xffz['\xff\xff\xff$\"";
  auto r = parse_origin_toml(overread, "o.toml");
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error().message, Contains("o.toml:1: not a TOML document"));
  auto nul = parse_origin_toml(std::string("backend = \"http://a:1\"\n\nx = 1\0\n", 31), "o.toml");
  REQUIRE_FALSE(nul.ok());
  CHECK_THAT(nul.error().message, Contains("o.toml:3:"));
  for (const char* bad : {"a = \"\xc0\xaf\"\n", "a = \"\xed\xa0\x80\"\n",
                          "a = \"\xf4\x90\x80\x80\"\n", "a = \"\xe2\x82\"\n"}) {
    CHECK_FALSE(parse_origin_toml(bad, "o.toml").ok());  // Overlong, surrogate, too high, cut.
  }
  // Nesting that made toml11 recurse until the stack overflowed (config_loader_fuzz).
  auto deep = parse_origin_toml("x = " + std::string(100000, '['), "o.toml");
  REQUIRE_FALSE(deep.ok());
  CHECK_THAT(deep.error().message,
             Contains("o.toml:1: not a TOML document: arrays or tables nested"));
  // Brackets in strings and comments are not nesting.
  auto quoted = parse_origin_toml(std::string("# [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n") +
                                      "backend = \"http://a:1\"\n" + kTlsToml,
                                  "o.toml");
  CHECK(quoted.ok());
  // Valid UTF-8 of every length still loads.
  auto ok = parse_origin_toml(
      std::string(
          "# caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\tend\r\nbackend = \"http://a:1\"\n") +
          kTlsToml,
      "o.toml");
  CHECK(ok.ok());
}
