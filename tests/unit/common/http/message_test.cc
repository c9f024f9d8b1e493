#include "common/http/message.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

using namespace coilgun;
using namespace coilgun::http;

// ---------------------------------------------------------------------------------------------
// Heads.

TEST_CASE("Request heads answer keep_alive() and expects_continue() by RFC 9112 rules") {
  RequestHead h;
  h.version_minor = 1;
  CHECK(h.keep_alive());
  h.headers = {{"connection", "Upgrade, CLOSE"}};
  CHECK_FALSE(h.keep_alive());
  h.version_minor = 0;
  h.headers = {};
  CHECK_FALSE(h.keep_alive());
  h.headers = {{"Connection", "keep-alive"}};
  CHECK(h.keep_alive());
  h.headers = {{"Connection", "keep-alive"}, {"Connection", "close"}};
  CHECK_FALSE(h.keep_alive());

  h.version_minor = 1;
  h.headers = {{"Expect", "100-Continue"}};
  CHECK(h.expects_continue());
  h.version_minor = 0;
  CHECK_FALSE(h.expects_continue());
  h.version_minor = 1;
  h.headers = {{"Expect", "something-else"}};
  CHECK_FALSE(h.expects_continue());

  ResponseHead r;
  r.version_minor = 1;
  CHECK(r.keep_alive());
  r.headers = {{"Connection", "close"}};
  CHECK_FALSE(r.keep_alive());
  r.status = 100;
  CHECK(r.is_interim());
  r.status = 101;
  CHECK_FALSE(r.is_interim());
}

// ---------------------------------------------------------------------------------------------
// Field helpers and proxy rewriting.

TEST_CASE("to_lower lowers ASCII letters only") {
  CHECK(http::to_lower("Content-Type: TEXT/Html; Charset=UTF-8") ==
        "content-type: text/html; charset=utf-8");
  CHECK(http::to_lower("[::1]:80 WWW.Example.COM") == "[::1]:80 www.example.com");
  CHECK(http::to_lower("\xC3\x89t\xC3\xA9") == "\xC3\x89t\xC3\xA9");  // UTF-8 bytes stay.
  CHECK(http::to_lower("").empty());
}

TEST_CASE("find, has_token, remove and set compare names without case") {
  std::vector<Header> h = {{"Content-Type", "text/html"},
                           {"connection", "keep-alive , Upgrade"},
                           {"X-A", "1"},
                           {"x-a", "2"}};
  CHECK(find(h, "content-type") == std::optional<std::string_view>("text/html"));
  CHECK(find(h, "X-A") == std::optional<std::string_view>("1"));
  CHECK_FALSE(find(h, "Content").has_value());
  CHECK(has_token(h, "Connection", "upgrade"));
  CHECK(has_token(h, "CONNECTION", "Keep-Alive"));
  CHECK_FALSE(has_token(h, "Connection", "close"));
  CHECK_FALSE(has_token(h, "Connection", "keep"));
  CHECK(remove(h, "X-a") == 2);
  CHECK(h.size() == 2);
  set(h, "content-type", "text/plain");
  REQUIRE(h.size() == 2);
  CHECK(h.back().name == "content-type");
  CHECK(h.back().value == "text/plain");
  CHECK(iequals("Transfer-Encoding", "transfer-encoding"));
  CHECK_FALSE(iequals("Host", "Hos"));
  CHECK(is_token("X-Custom_1.2~!#$%&'*+^`|"));
  CHECK_FALSE(is_token("a b"));
  CHECK_FALSE(is_token("a:b"));
  CHECK_FALSE(is_token(""));
  CHECK(is_valid_field_value("a\tb \x80\xff"));
  CHECK_FALSE(is_valid_field_value("a\x7f"));
}

TEST_CASE("remove_hop_by_hop removes connection fields and the ones Connection names") {
  std::vector<Header> h = {
      {"Host", "example.com"},
      {"Connection", "keep-alive, X-Secret , close"},
      {"connection", "x-other"},
      {"Keep-Alive", "timeout=5"},
      {"Proxy-Connection", "keep-alive"},
      {"TE", "trailers"},
      {"Trailer", "X-Sum"},
      {"Transfer-Encoding", "chunked"},
      {"Upgrade", "websocket"},
      {"x-secret", "1"},
      {"X-Other", "2"},
      {"Proxy-Authorization", "Basic abc"},
      {"Accept", "*/*"},
  };
  remove_hop_by_hop(h);
  const std::vector<std::string> expected = {"Host", "Proxy-Authorization", "Accept"};
  std::vector<std::string> names;
  for (const Header& f : h) names.push_back(f.name);
  CHECK(names == expected);
}

TEST_CASE("remove_hop_by_hop keeps Host and Content-Length even when Connection names them") {
  std::vector<Header> h = {{"Host", "h"},
                           {"Content-Length", "3"},
                           {"Connection", "host, content-length, cookie"},
                           {"Cookie", "a=b"}};
  remove_hop_by_hop(h);
  REQUIRE(h.size() == 2);
  CHECK(h[0].name == "Host");
  CHECK(h[1].name == "Content-Length");
}

TEST_CASE("add_via and add_forwarded_for append to an existing field or add one") {
  std::vector<Header> h = {{"Host", "h"}};
  add_via(h, "1.1 coilgun");
  add_forwarded_for(h, "192.0.2.1");
  REQUIRE(h.size() == 3);
  CHECK(h[1].name == "Via");
  CHECK(h[1].value == "1.1 coilgun");
  CHECK(h[2].name == "X-Forwarded-For");
  CHECK(h[2].value == "192.0.2.1");

  std::vector<Header> g = {{"via", "1.0 fred"},
                           {"x-forwarded-for", "203.0.113.7"},
                           {"Via", "1.1 p.example"},
                           {"X-Forwarded-For", ""}};
  add_via(g, "1.1 coilgun");
  add_forwarded_for(g, "2001:db8::1");
  REQUIRE(g.size() == 4);
  CHECK(g[0].value == "1.0 fred");
  CHECK(g[2].value == "1.1 p.example, 1.1 coilgun");
  CHECK(g[1].value == "203.0.113.7");
  CHECK(g[3].value == "2001:db8::1");
}

TEST_CASE("status_reason knows the standard phrases") {
  CHECK(status_reason(200) == "OK");
  CHECK(status_reason(400) == "Bad Request");
  CHECK(status_reason(421) == "Misdirected Request");
  CHECK(status_reason(431) == "Request Header Fields Too Large");
  CHECK(status_reason(502) == "Bad Gateway");
  CHECK(status_reason(504) == "Gateway Timeout");
  CHECK(status_reason(299).empty());
  CHECK(status_reason(-1).empty());
}

// ---------------------------------------------------------------------------------------------
// Hosts, targets and dates.

TEST_CASE("is_valid_host accepts uri-host with an optional port and nothing else") {
  CHECK(is_valid_host("www.example.com"));
  CHECK(is_valid_host("www.example.com:8080"));
  CHECK(is_valid_host("[2001:db8::1]:443"));
  CHECK(is_valid_host("10.0.0.1"));
  CHECK_FALSE(is_valid_host(""));
  CHECK_FALSE(is_valid_host("a.com, b.com"));
  CHECK_FALSE(is_valid_host("a.com:99999"));
  CHECK_FALSE(is_valid_host("a.com:x"));
  CHECK_FALSE(is_valid_host("[::1"));
  CHECK_FALSE(is_valid_host("[fe80::1%25eth0]"));  // Zone identifiers are refused.
  CHECK_FALSE(is_valid_host(std::string_view("a\0b", 3)));
}

TEST_CASE("split_absolute_target splits http and https targets only") {
  auto a = split_absolute_target("http://a.com:8080/p?q");
  REQUIRE(a);
  CHECK(a->authority == "a.com:8080");
  CHECK(a->origin_form == "/p?q");
  a = split_absolute_target("HTTPS://a.com?q=/x");
  REQUIRE(a);
  CHECK(a->authority == "a.com");
  CHECK(a->origin_form == "/?q=/x");
  a = split_absolute_target("http://a.com");
  REQUIRE(a);
  CHECK(a->origin_form == "/");
  a = split_absolute_target("http://u@a.com/");
  REQUIRE(a);
  CHECK(a->authority == "u@a.com");
  CHECK_FALSE(split_absolute_target("/http://a.com/"));
  CHECK_FALSE(split_absolute_target("ftp://a.com/"));
  CHECK_FALSE(split_absolute_target("a.com:443"));
  CHECK_FALSE(split_absolute_target("*"));
  CHECK_FALSE(split_absolute_target("http:/a.com"));
}

TEST_CASE("A 101 may switch only to a protocol the request listed", "[http]") {
  CHECK(http::upgrade_answers("websocket", "websocket"));
  CHECK(http::upgrade_answers("WebSocket", "websocket"));
  CHECK(http::upgrade_answers("foo/2, websocket", " websocket "));
  CHECK_FALSE(http::upgrade_answers("websocket", "h2c"));
  CHECK_FALSE(http::upgrade_answers("websocket", "websocket, h2c"));
  CHECK_FALSE(http::upgrade_answers("websocket", ""));
  CHECK_FALSE(http::upgrade_answers("websocket", " , "));
  CHECK_FALSE(http::upgrade_answers("", "websocket"));
}

TEST_CASE("parse_content_length takes 1*DIGIT within 64 bits and nothing else", "[http]") {
  CHECK(coilgun::http::parse_content_length("0") == 0u);
  CHECK(coilgun::http::parse_content_length("00") == 0u);
  CHECK(coilgun::http::parse_content_length("123456") == 123456u);
  CHECK(coilgun::http::parse_content_length("18446744073709551615") == UINT64_MAX);
  for (const char* bad :
       {"", "-1", "+1", " 1", "1 ", "1a", "0x10", "18446744073709551616", "1,1"}) {
    INFO(bad);
    CHECK_FALSE(coilgun::http::parse_content_length(bad).has_value());
  }
}

TEST_CASE("is_ipv4_address and is_ipv6_address read whole addresses only", "[http]") {
  CHECK(is_ipv4_address("10.0.0.1"));
  CHECK(is_ipv6_address("::1"));
  CHECK(is_ipv6_address("2001:db8::8a2e:370:7334"));
  for (const char* bad : {"", "10.0.0", "10.0.0.256", "10.0.0.1 ", "[::1]", "::1%eth0", "::g"}) {
    INFO(bad);
    CHECK_FALSE(is_ipv4_address(bad));
    CHECK_FALSE(is_ipv6_address(bad));
  }
  CHECK_FALSE(is_ipv6_address("10.0.0.1"));
  CHECK_FALSE(is_ipv4_address(std::string(64, '1')));
}
