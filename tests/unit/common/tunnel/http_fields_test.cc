#include "common/tunnel/http_fields.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "proto/headers.h"

using namespace coilgun;
using namespace coilgun::tunnel;

namespace {

// What a FieldList's names and values are, in order.
std::vector<std::string> names(const FieldList& l) {
  std::vector<std::string> out;
  for (const auto& [n, v] : l.items()) out.push_back(n);
  return out;
}

std::string value(const FieldList& l, std::string_view name) {
  for (const auto& [n, v] : l.items()) {
    if (n == name) return v;
  }
  return "<absent>";
}

// The request a client sent the edge, as the edge's ClientExchange maps it.
TunnelRequest client_request() {
  TunnelRequest r;
  r.method = "POST";
  r.authority = "Example.com:8080";
  r.path = "/a?b=1";
  r.headers = {{"Host", "Example.com:8080"},
               {"Content-Type", "text/plain"},
               {"Connection", "keep-alive, X-Secret"},
               {"X-Secret", "hop"},
               {"Keep-Alive", "timeout=5"},
               {"Expect", "100-continue"},
               {"Content-Length", "5"},
               {"Cookie", "a=1"}};
  return r;
}

// Fields through the real header coder, as they cross the link.
struct Wire {
  proto::HeaderEncoder encoder;
  proto::HeaderDecoder decoder;
  std::vector<uint8_t> block;

  std::span<const proto::HeaderField> cross(const FieldList& fields) {
    block.clear();
    REQUIRE(encoder.encode(fields.views(), block).ok());
    auto decoded = decoder.decode(block);
    REQUIRE(decoded.ok());
    return *decoded;
  }
};

}  // namespace

TEST_CASE(
    "Request fields put the pseudo-fields first and leave hop-by-hop fields, Host and Expect "
    "behind",
    "[http_fields]") {
  const FieldList f = request_fields(client_request(), "192.0.2.7");
  CHECK(names(f) == std::vector<std::string>{":method", ":scheme", ":authority", ":path",
                                             "content-type", "content-length", "cookie",
                                             "x-forwarded-for", "x-forwarded-proto"});
  CHECK(value(f, ":method") == "POST");
  CHECK(value(f, ":scheme") == "http");
  CHECK(value(f, ":authority") == "Example.com:8080");
  CHECK(value(f, ":path") == "/a?b=1");
  CHECK(value(f, "x-forwarded-for") == "192.0.2.7");
  CHECK(value(f, "x-forwarded-proto") == "http");
}

TEST_CASE("A client cannot make the edge drop X-Forwarded-For by naming it in Connection",
          "[http_fields]") {
  TunnelRequest r = client_request();
  r.headers.push_back({"Connection", "X-Forwarded-For"});
  r.headers.push_back({"X-Forwarded-For", "10.9.9.9"});
  CHECK(value(request_fields(r, "192.0.2.7"), "x-forwarded-for") == "192.0.2.7");
  // Without that, an existing one is extended.
  TunnelRequest plain = client_request();
  plain.headers.push_back({"X-Forwarded-For", "10.9.9.9"});
  CHECK(value(request_fields(plain, "192.0.2.7"), "x-forwarded-for") == "10.9.9.9, 192.0.2.7");
}

TEST_CASE("A request crosses the link and reaches the backend as the client meant it",
          "[http_fields]") {
  TunnelRequest sent = client_request();
  sent.backend_timeout = std::chrono::milliseconds(2500);
  sent.private_deltas = false;
  Wire wire;
  auto parsed = parse_request_fields(wire.cross(request_fields(sent, "::1")));
  REQUIRE(parsed.ok());
  CHECK(parsed->method == "POST");
  CHECK(parsed->authority == "Example.com:8080");
  CHECK(parsed->path == "/a?b=1");
  CHECK(parsed->upgrade.empty());
  CHECK(parsed->backend_timeout == std::chrono::milliseconds(2500));
  CHECK_FALSE(parsed->private_deltas);

  const http::RequestHead head = backend_request(std::move(*parsed));
  CHECK(head.method == "POST");
  CHECK(head.target == "/a?b=1");
  CHECK(http::find(head.headers, "host") == "Example.com:8080");
  CHECK(http::find(head.headers, "content-type") == "text/plain");
  CHECK(http::find(head.headers, "content-length") == "5");
  CHECK(http::find(head.headers, "cookie") == "a=1");
  CHECK(http::find(head.headers, "x-forwarded-for") == "::1");
  for (const char* gone : {"connection", "keep-alive", "x-secret", "expect"}) {
    CHECK_FALSE(http::find(head.headers, gone));
  }
}

TEST_CASE("An upgrade request reaches the backend with Upgrade and Connection: upgrade",
          "[http_fields]") {
  TunnelRequest sent = client_request();
  sent.method = "GET";
  sent.upgrade = "websocket";
  sent.headers.push_back({"Upgrade", "websocket"});  // Hop-by-hop: it crosses as :upgrade.
  const FieldList f = request_fields(sent, "127.0.0.1");
  CHECK(value(f, ":upgrade") == "websocket");
  CHECK(value(f, "upgrade") == "<absent>");
  Wire wire;
  auto parsed = parse_request_fields(wire.cross(f));
  REQUIRE(parsed.ok());
  CHECK(parsed->upgrade == "websocket");
  const http::RequestHead head = backend_request(std::move(*parsed));
  CHECK(http::find(head.headers, "upgrade") == "websocket");
  CHECK(http::find(head.headers, "connection") == "upgrade");
}

TEST_CASE("The agent takes only what the protocol allows from request fields", "[http_fields]") {
  using F = proto::HeaderField;
  SECTION("no :method or no :path is malformed") {
    const std::vector<F> no_method = {{":path", "/"}, {":authority", "h"}};
    const std::vector<F> no_path = {{":method", "GET"}, {":authority", "h"}};
    for (const auto* fields : {&no_method, &no_path}) {
      auto r = parse_request_fields(*fields);
      REQUIRE_FALSE(r.ok());
      CHECK(r.status().code() == Code::kMalformed);
    }
  }
  SECTION("unknown pseudo-fields and hop-by-hop fields are dropped") {
    const std::vector<F> fields = {{":method", "GET"}, {":path", "/"},          {":authority", "h"},
                                   {":future", "x"},   {"connection", "x-hop"}, {"x-hop", "1"},
                                   {"te", "trailers"}, {"accept", "*/*"}};
    auto r = parse_request_fields(fields);
    REQUIRE(r.ok());
    REQUIRE(r->headers.size() == 1);
    CHECK(r->headers[0].name == "accept");
  }
  SECTION("a :backend-timeout out of its range is ignored") {
    for (const char* bad : {"0", "86400001", "-5", "12ms", "", "99999999999999999999999"}) {
      const std::vector<F> fields = {{":method", "GET"}, {":path", "/"}, {":backend-timeout", bad}};
      auto r = parse_request_fields(fields);
      REQUIRE(r.ok());
      CHECK_FALSE(r->backend_timeout);
    }
    const std::vector<F> day = {
        {":method", "GET"}, {":path", "/"}, {":backend-timeout", "86400000"}};
    CHECK(parse_request_fields(day)->backend_timeout == std::chrono::hours(24));
  }
  SECTION("without :authority the Host field names it, and an empty one stays empty") {
    const std::vector<F> with_host = {{":method", "GET"}, {":path", "/"}, {"host", "h.test"}};
    auto r = parse_request_fields(with_host);
    REQUIRE(r.ok());
    CHECK(r->authority == "h.test");
    const std::vector<F> none = {{":method", "GET"}, {":path", "/"}};
    auto bare = parse_request_fields(none);
    REQUIRE(bare.ok());
    const http::RequestHead head = backend_request(std::move(*bare));
    CHECK(http::find(head.headers, "host") == "");  // HTTP/1.0 without Host: an empty Host.
  }
}

TEST_CASE("Response fields are lower-case and keep Upgrade only for an upgrade's answer",
          "[http_fields]") {
  const std::vector<http::Header> backend = {
      {"Content-Type", "text/html"}, {"Connection", "Upgrade, X-Hop"}, {"X-Hop", "1"},
      {"Upgrade", "websocket"},      {"Transfer-Encoding", "chunked"}, {"ETag", "\"v1\""}};
  CHECK(names(response_fields(backend, false)) == std::vector<std::string>{"content-type", "etag"});
  const FieldList upgraded = response_fields(backend, true);
  CHECK(names(upgraded) == std::vector<std::string>{"content-type", "etag", "upgrade"});
  CHECK(value(upgraded, "upgrade") == "websocket");
  // A 426 without an Upgrade field gains none.
  CHECK(names(response_fields({{"Content-Type", "text/plain"}}, true)) ==
        std::vector<std::string>{"content-type"});
}

TEST_CASE("Response fields reach the client as they crossed", "[http_fields]") {
  Wire wire;
  const FieldList sent = response_fields(
      {{"Content-Type", "text/html"}, {"Set-Cookie", "a=1"}, {"Set-Cookie", "b=2"}}, false);
  const std::vector<http::Header> got = http_headers(wire.cross(sent));
  REQUIRE(got.size() == 3);
  CHECK(got[0].name == "content-type");
  CHECK(got[0].value == "text/html");
  CHECK(got[1].value == "a=1");  // Repeated fields stay apart and in order.
  CHECK(got[2].value == "b=2");
}
