// The value parsers and file checks of common/daemon/config.h.

#include <catch2/catch.hpp>
#include <string>

#include "tests/unit/common/daemon/config_test_util.h"

using namespace coilgun::config;
using namespace coilgun::config::testing;
using Catch::Matchers::Contains;
using std::chrono::milliseconds;

TEST_CASE("environment_from keeps only COILGUN_ variables", "[config]") {
  const char* envp[] = {"PATH=/bin", "COILGUN_LISTEN=1.2.3.4:5", "COILGUN_X=a=b", "COILGUN_BAD",
                        nullptr};
  EnvMap env = environment_from(envp);
  CHECK(env == EnvMap{{"COILGUN_LISTEN", "1.2.3.4:5"}, {"COILGUN_X", "a=b"}});
  CHECK(environment_from(nullptr).empty());
}

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
    CHECK_THAT(r.error().message, Contains("invalid duration"));
  }
  CHECK_THAT(parse_duration("10 parsecs").error().message, Contains("unknown unit \"parsecs\""));
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
  CHECK_THAT(parse_size("64K").error().message, Contains("ambiguous unit \"K\""));
  CHECK_THAT(parse_size("1.5MiB").error().message, Contains("fractions are not supported"));
  CHECK_THAT(parse_size("lots").error().message, Contains("invalid size \"lots\""));
  CHECK_THAT(parse_size("-1").error().message, Contains("negative"));
  CHECK_THAT(parse_size("99999999999GiB").error().message, Contains("too large"));
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
  CHECK_THAT(parse_host_port("localhost").error().message, Contains("has no port"));
  CHECK_THAT(parse_host_port("::1:80").error().message, Contains("IPv6 addresses need brackets"));
  CHECK_THAT(parse_host_port("[::1]").error().message, Contains("has no port"));
  CHECK_THAT(parse_host_port("[::1:80").error().message, Contains("no closing ']'"));
  CHECK_THAT(parse_host_port("[zz::1]:80").error().message, Contains("invalid IPv6 address"));
  CHECK_THAT(parse_host_port("1.2.3.4:65536").error().message,
             Contains("not a number in 0..65535"));
  CHECK_THAT(parse_host_port("1.2.3.4:http").error().message, Contains("not a number in 0..65535"));
  CHECK_THAT(parse_host_port("999.1.1.1:80").error().message, Contains("invalid IPv4 address"));
  CHECK_THAT(parse_host_port(":80").error().message, Contains("has no host"));
  CHECK_THAT(parse_host_port("bad host:80").error().message, Contains("invalid character"));
  CHECK_THAT(parse_host_port("-a.example:80").error().message, Contains("starts or ends with '-'"));
  CHECK_THAT(parse_host_port("").error().message, Contains("empty address"));
}

TEST_CASE("Backend URLs accept http only", "[config]") {
  CHECK(*parse_backend_url("http://127.0.0.1:8080") == BackendUrl{"127.0.0.1", 8080});
  CHECK(*parse_backend_url("http://127.0.0.1:8080/") == BackendUrl{"127.0.0.1", 8080});
  CHECK(*parse_backend_url("HTTP://web") == BackendUrl{"web", 80});
  CHECK(*parse_backend_url("http://[::1]:81") == BackendUrl{"::1", 81});
  CHECK(*parse_backend_url("http://[::1]") == BackendUrl{"::1", 80});
  CHECK(parse_backend_url("http://[::1]:81")->to_string() == "http://[::1]:81");
  CHECK(*parse_backend_url("https://a") == BackendUrl{"a", 443, true});
  CHECK_THAT(parse_backend_url("127.0.0.1:8080").error().message,
             Contains("http(s)://HOST:PORT"));
  CHECK_THAT(parse_backend_url("http://a:80/app").error().message,
             Contains("a path, query or fragment"));
  CHECK_THAT(parse_backend_url("http://u:p@a:80").error().message, Contains("credentials"));
  CHECK_THAT(parse_backend_url("http://a:0").error().message, Contains("port 0"));
  CHECK_THAT(parse_backend_url("http://").error().message, Contains("has no host"));
}

TEST_CASE("Workers and log levels parse", "[config]") {
  CHECK(*parse_workers("auto") == kAutoWorkers);
  CHECK(*parse_workers("256") == 256);
  CHECK_FALSE(parse_workers("0").ok());
  CHECK_FALSE(parse_workers("257").ok());
  CHECK_THAT(parse_workers("many").error().message, Contains("expected \"auto\" or 1..256"));
  CHECK(resolve_workers(kAutoWorkers, 8) == 8);
  CHECK(resolve_workers(kAutoWorkers, 0) == 1);
  CHECK(resolve_workers(kAutoWorkers, 1000) == 256);
  CHECK(resolve_workers(3, 8) == 3);
  auto loud = origin(Argv{"--log-level", "loud"});
  REQUIRE_FALSE(loud.ok());
  CHECK_THAT(loud.error().message,
             Contains("invalid log level \"loud\": expected debug, info, warn or error"));
  auto r = origin(Argv{"--workers", "0"});
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error().message, Contains("--workers: invalid workers \"0\""));
}

TEST_CASE("check_files reports missing, empty and unreadable TLS files", "[config]") {
  TempDir dir;
  const std::string ca = dir.write("ca.pem", "-----BEGIN CERTIFICATE-----\n");
  const std::string cert = dir.write("cert.pem", "");
  const std::string missing = dir.path("missing.key");
  auto bad = check_files(TlsConfig{ca, cert, missing});
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().message.find("tls.ca") == std::string::npos);
  CHECK_THAT(bad.error().message, Contains("tls.cert \"" + cert + "\": is empty"));
  CHECK_THAT(bad.error().message, Contains("tls.key \"" + missing + "\": does not exist"));

  auto dir_as_file = check_files(TlsConfig{ca, ca, dir.path("")});
  REQUIRE_FALSE(dir_as_file.ok());
  CHECK_THAT(dir_as_file.error().message, Contains("not a regular file"));

  const std::string key = dir.write("key.pem", "-----BEGIN PRIVATE KEY-----\n");
  CHECK(check_files(TlsConfig{ca, key, key}).ok());
  CHECK_THAT(check_files(TlsConfig{}).error().message, Contains("tls.ca is not set"));
}

TEST_CASE("The memcached password comes from its file, with the username or not at all",
          "[config]") {
  TempDir dir;
  StoreConfig s;
  CHECK(memcached_password(s).value() == "");  // Neither: no SASL.
  s.memcached_username = "coilgun";
  CHECK_THAT(memcached_password(s).error().message,
             Contains("store.memcached_username is set but store.memcached_password_file is not"));
  s.memcached_password_file = dir.write("pw", "s3cret pass\n");
  CHECK(memcached_password(s).value() == "s3cret pass");  // One trailing newline dropped.
  s.memcached_password_file = dir.write("pw-crlf", "s3cret\r\n");
  CHECK(memcached_password(s).value() == "s3cret");
  s.memcached_password_file = dir.write("empty", "\n");
  CHECK_THAT(memcached_password(s).error().message, Contains("empty"));
  s.memcached_password_file = dir.write("big", std::string(2000, 'x'));
  CHECK_THAT(memcached_password(s).error().message, Contains("larger than 1024 bytes"));
  s.memcached_password_file = dir.path("");
  CHECK_THAT(memcached_password(s).error().message, Contains("is a directory"));
  s.memcached_password_file = dir.path("missing");
  CHECK_THAT(memcached_password(s).error().message, Contains("No such file or directory"));
  s.memcached_username.clear();
  CHECK_THAT(memcached_password(s).error().message,
             Contains("store.memcached_password_file is set but store.memcached_username is not"));
}

TEST_CASE("Secret keys are recognised by name", "[config]") {
  CHECK(is_secret_key("memcached.password"));
  CHECK(is_secret_key("admin.API_TOKEN"));
  CHECK_FALSE(is_secret_key("tls.key"));
  CHECK_FALSE(is_secret_key("store.memcached_password_file"));  // A path: printed.
  CHECK_FALSE(is_secret_key("listen"));
}
