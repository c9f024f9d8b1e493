#include "common/http/parser.h"

#include <catch2/catch.hpp>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "tests/unit/common/http/parser_harness.h"

using namespace coilgun;
using namespace coilgun::http;
using namespace coilgun::http::testing;

// ---------------------------------------------------------------------------------------------
// Requests.

TEST_CASE("Parser delivers a GET request the same at every split point") {
  const std::string input =
      "GET /a/b?c=d&e HTTP/1.1\r\n"
      "Host: www.example.com\r\n"
      "User-Agent: test/1.0 (x; y)\r\n"
      "X-Spaces:   inner  spaces\t \r\n"
      "X-Empty:\r\n"
      "X-Obs-Text: caf\xc3\xa9\r\n"
      "accept: */*\r\n"
      "\r\n";
  const Outcome o = run_every_split(input);
  CHECK(o.code == Code::kOk);
  CHECK(o.log ==
        "request GET /a/b?c=d&e 1.1\n"
        "  Host: [www.example.com]\n"
        "  User-Agent: [test/1.0 (x; y)]\n"
        "  X-Spaces: [inner  spaces]\n"
        "  X-Empty: []\n"
        "  X-Obs-Text: [caf\xc3\xa9]\n"
        "  accept: [*/*]\n"
        "  framing none keep-alive\n"
        "complete\n"
        "paused\n");
}

TEST_CASE("Parser ignores empty lines before a request line") {
  const Outcome o = run_every_split("\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n");
  CHECK(o.code == Code::kOk);
  CHECK(o.log == "request GET / 1.1\n  Host: [h]\n  framing none keep-alive\ncomplete\npaused\n");
}

TEST_CASE("Parser delivers a Content-Length body at every split point") {
  const Outcome o =
      run_every_split("POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world");
  CHECK(o.code == Code::kOk);
  CHECK(o.log ==
        "request POST /upload 1.1\n"
        "  Host: [h]\n"
        "  Content-Length: [11]\n"
        "  framing length length 11 keep-alive\n"
        "body hello world\n"
        "complete\n"
        "paused\n");
}

TEST_CASE("Parser reports Content-Length: 0 as a length framing with an empty body") {
  const Outcome o = run_every_split("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
  CHECK(o.code == Code::kOk);
  CHECK(o.log ==
        "request POST / 1.1\n  Host: [h]\n  Content-Length: [0]\n"
        "  framing length length 0 keep-alive\ncomplete\npaused\n");
}

TEST_CASE("Parser delivers a chunked body with extensions and trailers at every split point") {
  const Outcome o = run_every_split(
      "POST /c HTTP/1.1\r\n"
      "Host: h\r\n"
      "Transfer-Encoding: chunked\r\n"
      "Trailer: X-Checksum\r\n"
      "\r\n"
      "5;name=value\r\n"
      "hello\r\n"
      "1;flag\r\n"
      " \r\n"
      "A;q=\"quoted; value\"\r\n"
      "0123456789\r\n"
      "0;last\r\n"
      "X-Checksum: abc  \r\n"
      "X-Other: 1\r\n"
      "\r\n");
  CHECK(o.code == Code::kOk);
  CHECK(o.log ==
        "request POST /c 1.1\n"
        "  Host: [h]\n"
        "  Transfer-Encoding: [chunked]\n"
        "  Trailer: [X-Checksum]\n"
        "  framing chunked keep-alive\n"
        "trailers\n"
        "  X-Checksum: [abc]\n"
        "  X-Other: [1]\n"
        "body hello 0123456789\n"
        "complete\n"
        "paused\n");
}

TEST_CASE("Parser delivers a chunked body without trailers and accepts upper-case chunked") {
  const Outcome o = run_every_split(
      "PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: CHUNKED\r\n\r\n"
      "3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n");
  CHECK(o.code == Code::kOk);
  CHECK(o.log ==
        "request PUT /x 1.1\n  Host: [h]\n  Transfer-Encoding: [CHUNKED]\n"
        "  framing chunked keep-alive\nbody abc0123456789abcdef\ncomplete\npaused\n");
}

TEST_CASE("Parser delivers three pipelined requests in order, pausing after each") {
  const std::string first = "GET /1 HTTP/1.1\r\nHost: h\r\n\r\n";
  const std::string second = "POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc";
  const std::string third =
      "PUT /3 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxy\r\n0\r\n\r\n";
  const std::string input = first + second + third;

  Recorder rec;
  Parser parser(Parser::Mode::kRequest, rec);
  rec.parser = &parser;
  std::span<const uint8_t> rest = as_bytes(input);

  Result<size_t> n = parser.feed(rest);
  REQUIRE(n.ok());
  CHECK(*n == first.size());
  CHECK(parser.paused());
  REQUIRE(rec.requests.size() == 1);
  CHECK(rec.requests[0].target == "/1");
  // The next message waits until the caller says so.
  Result<size_t> again = parser.feed(rest.subspan(*n));
  CHECK(again.status().code() == Code::kInternal);
  CHECK(rec.requests.size() == 1);

  parser.resume();
  rest = rest.subspan(*n);
  n = parser.feed(rest);
  REQUIRE(n.ok());
  CHECK(*n == second.size());
  REQUIRE(rec.requests.size() == 2);
  CHECK(rec.requests[1].target == "/2");
  CHECK(rec.bodies == std::vector<std::string>{"", "abc"});

  parser.resume();
  rest = rest.subspan(*n);
  n = parser.feed(rest);
  REQUIRE(n.ok());
  CHECK(*n == third.size());
  REQUIRE(rec.requests.size() == 3);
  CHECK(rec.requests[2].method == "PUT");
  CHECK(rec.bodies == std::vector<std::string>{"", "abc", "xy"});
  parser.resume();
  CHECK(parser.finish().ok());

  // And the same events whichever way the bytes arrive.
  const Outcome o = run_every_split(input);
  CHECK(o.code == Code::kOk);
  CHECK(o.log ==
        "request GET /1 1.1\n  Host: [h]\n  framing none keep-alive\ncomplete\npaused\n"
        "request POST /2 1.1\n  Host: [h]\n  Content-Length: [3]\n"
        "  framing length length 3 keep-alive\nbody abc\ncomplete\npaused\n"
        "request PUT /3 1.1\n  Host: [h]\n  Transfer-Encoding: [chunked]\n"
        "  framing chunked keep-alive\nbody xy\ncomplete\npaused\n");
}

TEST_CASE("Parser refuses bytes after a request with Connection: close") {
  const Outcome o = run_every_split(
      "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n");
  CHECK(o.code == Code::kClosed);
  CHECK(o.log ==
        "request GET / 1.1\n  Host: [h]\n  Connection: [close]\n  framing none close\n"
        "complete\npaused\n");
}

TEST_CASE("Parser treats HTTP/1.0 as close unless keep-alive is asked for") {
  const Outcome closing = run_every_split("GET / HTTP/1.0\r\n\r\nGET / HTTP/1.0\r\n\r\n");
  CHECK(closing.code == Code::kClosed);
  CHECK(closing.log == "request GET / 1.0\n  framing none close\ncomplete\npaused\n");

  const Outcome kept =
      run_every_split("GET /a HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n");
  CHECK(kept.code == Code::kOk);
  CHECK(kept.log ==
        "request GET /a 1.0\n  Connection: [Keep-Alive]\n  framing none keep-alive\n"
        "complete\npaused\n"
        "request GET /b 1.0\n  framing none close\ncomplete\npaused\n");
}

TEST_CASE("Parser hands an Upgrade request over as an ordinary request and keeps parsing") {
  const Outcome o = run_every_split(
      "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
      "GET /next HTTP/1.1\r\nHost: h\r\n\r\n");
  CHECK(o.code == Code::kOk);
  CHECK(o.log ==
        "request GET /ws 1.1\n  Host: [h]\n  Connection: [Upgrade]\n  Upgrade: [websocket]\n"
        "  framing none keep-alive\ncomplete\npaused\n"
        "request GET /next 1.1\n  Host: [h]\n  framing none keep-alive\ncomplete\npaused\n");
}

TEST_CASE("Parser delivers CONNECT without a body for the caller to refuse") {
  const Outcome o = run_every_split(
      "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
      "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
  CHECK(o.code == Code::kOk);
  CHECK(o.log ==
        "request CONNECT example.com:443 1.1\n  Host: [example.com:443]\n"
        "  framing none keep-alive\ncomplete\npaused\n"
        "request GET / 1.1\n  Host: [h]\n  framing none keep-alive\ncomplete\npaused\n");
}

TEST_CASE("Parser accepts absolute-form and asterisk-form targets") {
  CHECK(run_every_split("GET http://h/x?y HTTP/1.1\r\nHost: h\r\n\r\n").code == Code::kOk);
  CHECK(run_every_split("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n").code == Code::kOk);
}

TEST_CASE("Parser streams a large body in pieces no larger than what was fed") {
  const size_t size = 1 << 20;
  std::string input =
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: " + std::to_string(size) + "\r\n\r\n";
  const size_t head = input.size();
  for (size_t i = 0; i < size; ++i) input.push_back(static_cast<char>('a' + i % 26));

  Recorder rec;
  Parser parser(Parser::Mode::kRequest, rec);
  rec.parser = &parser;
  std::vector<size_t> bodies_seen;
  for (size_t at = 0; at < input.size(); at += 1000) {
    const size_t len = std::min<size_t>(1000, input.size() - at);
    Result<size_t> n = parser.feed(as_bytes(std::string_view(input).substr(at, len)));
    REQUIRE(n.ok());
    REQUIRE(*n == len);
    bodies_seen.push_back(rec.body.size());
  }
  CHECK(rec.largest_body_call <= 1000);
  // The body arrived while it was being fed, not all at the end.
  CHECK(bodies_seen[head / 1000 + 2] > 0);
  CHECK(bodies_seen[bodies_seen.size() / 2] > 0);
  REQUIRE(rec.bodies.size() == 1);
  CHECK(rec.bodies[0] == input.substr(head));
}

TEST_CASE("Parser's body views point into the bytes given to feed()") {
  const std::string input = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nabcd";
  struct Check : Parser::Handler {
    const uint8_t* lo = nullptr;
    const uint8_t* hi = nullptr;
    bool inside = false;
    void on_body(std::span<const uint8_t> d) override {
      inside = d.data() >= lo && d.data() + d.size() <= hi;
    }
    void on_message_complete() override {}
  } check;
  Parser parser(Parser::Mode::kRequest, check);
  check.lo = reinterpret_cast<const uint8_t*>(input.data());
  check.hi = check.lo + input.size();
  REQUIRE(parser.feed(as_bytes(input)).ok());
  CHECK(check.inside);
}

TEST_CASE("Parser's finish() is ok between messages and kClosed inside one") {
  CHECK(run("GET / HTTP/1.1\r\nHost: h\r\n\r\n", {}, {.finish = true}).code == Code::kOk);
  CHECK(run("", {}, {.finish = true}).code == Code::kOk);
  CHECK(run("\r\n", {}, {.finish = true}).code == Code::kOk);
  CHECK(run("GET / HTTP/1.1\r\nHost: h\r\n", {}, {.finish = true}).code == Code::kClosed);
  CHECK(run("G", {}, {.finish = true}).code == Code::kClosed);
  CHECK(run("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nabc", {}, {.finish = true})
            .code == Code::kClosed);
  CHECK(run("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", {},
            {.finish = true})
            .code == Code::kClosed);

  Recorder rec;
  Parser parser(Parser::Mode::kRequest, rec);
  rec.parser = &parser;
  CHECK(parser.finish().ok());
  CHECK(parser.feed(as_bytes("GET")).status().code() == Code::kClosed);
}

// ---------------------------------------------------------------------------------------------
// Responses.

TEST_CASE("Parser delivers a response with a Content-Length body at every split point") {
  const Outcome o = run_every_split(
      "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5\r\n\r\nhello"
      "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
      response_options());
  CHECK(o.code == Code::kOk);
  CHECK(o.log ==
        "response 200 [OK] 1.1\n  Content-Type: [text/html]\n  Content-Length: [5]\n"
        "  framing length length 5 keep-alive\nbody hello\ncomplete\npaused\n"
        "response 404 [Not Found] 1.1\n  Content-Length: [0]\n"
        "  framing length length 0 keep-alive\ncomplete\npaused\n");
}

TEST_CASE("Parser delivers a chunked response at every split point") {
  const Outcome o = run_every_split(
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n",
      response_options());
  CHECK(o.code == Code::kOk);
  CHECK(o.log ==
        "response 200 [OK] 1.1\n  Transfer-Encoding: [chunked]\n  framing chunked keep-alive\n"
        "body Wikipedia\ncomplete\npaused\n");
}

TEST_CASE("Parser reads no body after a HEAD request despite Content-Length") {
  Options opt = response_options();
  opt.request_was_head = true;
  const Outcome o = run_every_split(
      "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
      opt);
  CHECK(o.code == Code::kOk);
  CHECK(o.log ==
        "response 200 [OK] 1.1\n  Content-Length: [1234]\n"
        "  framing none length 1234 keep-alive\ncomplete\npaused\n"
        "response 200 [OK] 1.1\n  Transfer-Encoding: [chunked]\n"
        "  framing none keep-alive\ncomplete\npaused\n");
}

TEST_CASE("Parser reads no body in 204 and 304 responses whatever their fields say") {
  const Outcome o = run_every_split(
      "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n"
      "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nETag: \"x\"\r\n\r\n"
      "HTTP/1.1 304 Not Modified\r\n\r\n"
      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
      response_options());
  CHECK(o.code == Code::kOk);
  CHECK(o.log ==
        "response 204 [No Content] 1.1\n  Content-Length: [10]\n"
        "  framing none length 10 keep-alive\ncomplete\npaused\n"
        "response 304 [Not Modified] 1.1\n  Content-Length: [5]\n  ETag: [\"x\"]\n"
        "  framing none length 5 keep-alive\ncomplete\npaused\n"
        "response 304 [Not Modified] 1.1\n  framing none keep-alive\ncomplete\npaused\n"
        "response 200 [OK] 1.1\n  Content-Length: [2]\n"
        "  framing length length 2 keep-alive\nbody ok\ncomplete\npaused\n");
}

TEST_CASE("Parser delivers 100 Continue and 103 Early Hints, then the final response") {
  const Outcome o = run_every_split(
      "HTTP/1.1 100 Continue\r\n\r\n"
      "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
      "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
      response_options());
  CHECK(o.code == Code::kOk);
  CHECK(o.log ==
        "response 100 [Continue] 1.1\n  framing none keep-alive\ncomplete\npaused\n"
        "response 103 [Early Hints] 1.1\n  Link: [</style.css>; rel=preload]\n"
        "  framing none keep-alive\ncomplete\npaused\n"
        "response 200 [OK] 1.1\n  Content-Length: [3]\n"
        "  framing length length 3 keep-alive\nbody abc\ncomplete\npaused\n");
}

TEST_CASE("Parser ends a close-delimited response body at finish()") {
  Options opt = response_options();
  opt.finish = true;
  const Outcome o = run_every_split("HTTP/1.1 200 OK\r\nServer: x\r\n\r\nall of this, to EOF", opt);
  CHECK(o.code == Code::kOk);
  CHECK(o.log ==
        "response 200 [OK] 1.1\n  Server: [x]\n  framing close close\n"
        "body all of this, to EOF\ncomplete\n");

  // Without finish() the message never completes.
  const Outcome open = run("HTTP/1.0 200 OK\r\n\r\nabc", {}, response_options());
  CHECK(open.code == Code::kOk);
  CHECK(open.log == "response 200 [OK] 1.0\n  framing close close\n");

  // HTTP/1.0 with a length completes, then closes the connection.
  const Outcome done =
      run_every_split("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nab", response_options());
  CHECK(done.code == Code::kClosed);
  CHECK(done.log ==
        "response 200 [OK] 1.0\n  Content-Length: [1]\n  framing length length 1 close\n"
        "body a\ncomplete\npaused\n");
}

TEST_CASE("Parser reports kClosed when a response ends before its length") {
  Options opt = response_options();
  opt.finish = true;
  CHECK(run("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", {}, opt).code == Code::kClosed);
  CHECK(run("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab", {}, opt).code ==
        Code::kClosed);
  CHECK(run("HTTP/1.1 200 O", {}, opt).code == Code::kClosed);
}

TEST_CASE("Parser stops at a 101 response: what follows is not HTTP") {
  const Outcome o = run_every_split(
      "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
      "\x81\x05hello",
      response_options());
  CHECK(o.code == Code::kUnsupported);
  CHECK(o.log ==
        "response 101 [Switching Protocols] 1.1\n  Connection: [upgrade]\n"
        "  Upgrade: [websocket]\n  framing none close\ncomplete\npaused\n");
}

// ---------------------------------------------------------------------------------------------
// Strict where RFC 9112 says so, lenient where it says so.

TEST_CASE("Parser refuses a bare CR in a request head, never taking it for a line end") {
  // llhttp 8.1 alone takes "CR LF CR x" as the end of the head and "x" as the body's start.
  const std::vector<BadCase> cases = {
      {"CR LF CR x ending the head",
       "GET / HTTP/1.1\r\nHost: h\r\n\rGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"},
      {"CR LF CR x ending a head with a body",
       "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\rXhello"},
      {"bare CR inside a value", "GET / HTTP/1.1\r\nHost: h\r\na: b\rc\r\n\r\n"},
      {"bare CR at the end of a value", "GET / HTTP/1.1\r\nHost: h\r\na: b\r\r\n\r\n"},
      {"bare CR after a field name", "GET / HTTP/1.1\r\nHost: h\r\na\r: b\r\n\r\n"},
      {"bare CR in the request line", "GET /\r HTTP/1.1\r\nHost: h\r\n\r\n"},
      {"bare CR at the end of the request line", "GET / HTTP/1.1\rHost: h\r\n\r\n"},
      {"bare CR before the request line", "\rGET / HTTP/1.1\r\nHost: h\r\n\r\n"},
      {"bare CR in a trailer section",
       "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: a\rb\r\n\r\n",
       true},
      {"CR LF CR x ending a trailer section",
       "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: a\r\n\rX", true},
  };
  for (const BadCase& c : cases) {
    INFO(c.what);
    const Outcome o = run_every_split(c.input);
    CHECK(o.code == Code::kMalformed);
    check_refused(o, c);
  }
}

TEST_CASE("Parser refuses a bare CR in a response head") {
  const std::vector<BadCase> cases = {
      {"CR LF CR x ending the head", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\rX"},
      {"bare CR inside a value", "HTTP/1.1 200 OK\r\na: b\rc\r\nContent-Length: 0\r\n\r\n"},
      {"bare CR in the reason phrase", "HTTP/1.1 200 O\rK\r\nContent-Length: 0\r\n\r\n"},
  };
  for (const BadCase& c : cases) {
    INFO(c.what);
    const Outcome o = run_every_split(c.input, response_options());
    CHECK(o.code == Code::kMalformed);
    check_refused(o, c);
  }
}

TEST_CASE("Parser refuses a bare CR on a chunk-size line or after chunk data") {
  const std::string request = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
  const std::string response = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (const std::string& chunks : {
           std::string("1\rX\r\n0\r\n\r\n"),          // After the size.
           std::string("1\r\rX\r\n0\r\n\r\n"),        // Two CRs.
           std::string("1;a=b\rX\r\n0\r\n\r\n"),      // After an extension.
           std::string("1;a=\"b\"\rX\r\n0\r\n\r\n"),  // After a quoted extension.
           std::string("1\r\nX\r0\r\n\r\n"),          // After the data.
           std::string("1\r\nX\r\n0\r\r\n\r\n"),      // On the last chunk's line.
           std::string("1\r\nX\r\n0;last\rA: b\r\n\r\n"),
       }) {
    INFO(chunks);
    const Outcome req = run_every_split(request + chunks);
    CHECK(req.code == Code::kMalformed);
    check_refused(req, {"", "", true});
    const Outcome res = run_every_split(response + chunks, response_options());
    CHECK(res.code == Code::kMalformed);
    check_refused(res, {"", "", true});
  }
}

TEST_CASE("Parser delivers any method token as received, framed by its fields alone") {
  // RFC 9110 §9.1: the method token is case-sensitive; any token is a method.
  for (const char* method : {"QUERY", "PROPFIND", "MKCOL", "FOO-BAR", "get", "Get", "M-SEARCH",
                             "PRI", "DESCRIBE", "!#$%&'*+-.^_`|~09azAZ"}) {
    INFO(method);
    const std::string m = method;
    const Outcome o =
        run_every_split(m + " /r HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc" + m +
                        " * HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(o.code == Code::kOk);
    CHECK(o.log == "request " + m + " /r 1.1\n  Host: [h]\n  Content-Length: [3]\n" +
                       "  framing length length 3 keep-alive\nbody abc\ncomplete\npaused\n" +
                       "request " + m + " * 1.1\n  Host: [h]\n  framing none keep-alive\n" +
                       "complete\npaused\n");
  }
}

TEST_CASE("Parser frames HEAD like any other method and refuses HEAD or CONNECT in another case") {
  // A request's framing never depends on HEAD; only CONNECT (exactly) is special.
  const Outcome head = run_every_split(
      "HEAD / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n");
  CHECK(head.code == Code::kOk);
  CHECK(head.log ==
        "request HEAD / 1.1\n  Host: [h]\n  Transfer-Encoding: [chunked]\n"
        "  framing chunked keep-alive\nbody ab\ncomplete\npaused\n");
  // A backend matching methods without case would frame these differently from this proxy.
  for (const char* m : {"connect", "Connect", "head", "hEAD"}) {
    INFO(m);
    const Outcome o =
        run_every_split(std::string(m) + " /x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nab");
    CHECK(o.code == Code::kMalformed);
  }
}

TEST_CASE("Parser bounds the empty lines before a start line by max_header_bytes") {
  std::string blank;
  for (int i = 0; i < 100; ++i) blank += "\r\n";
  CHECK(run_every_split(blank + "GET / HTTP/1.1\r\nHost: h\r\n\r\n").code == Code::kOk);
  Recorder rec;
  Parser p(Parser::Mode::kRequest, rec, Parser::Limits{.max_header_bytes = 1024, .max_headers = 8});
  std::string flood;
  for (int i = 0; i < 600; ++i) flood += "\r\n";  // 1,200 bytes and never a request.
  const auto r = p.feed(as_bytes(flood));
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == Code::kMalformed);
}

TEST_CASE("Parser accepts every chunk extension form and drops the extensions") {
  const std::string head = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
  const std::string expected =
      "request POST / 1.1\n  Host: [h]\n  Transfer-Encoding: [chunked]\n"
      "  framing chunked keep-alive\nbody abc\ncomplete\npaused\n";
  for (const char* ext : {
           ";a=b;c=d",              // An unquoted value followed by another extension.
           ";a=\"q\\\"uo\\\\te\"",  // Quoted-pairs in a quoted value.
           ";a=\"x;y=z\"",          // A quoted ';' and '='.
           ";a=\"\"",               // An empty quoted value.
           " ; a = b ; c",          // BWS around ';' and '='.
           "\t;a\t=\t\"t\"\t;b",    // BWS as HTAB.
           ";a;b;c",                // Names alone.
           ";a=\"caf\xc3\xa9\"",    // obs-text.
           ";!#$%&'*+-.^_`|~=~",    // Every tchar.
       }) {
    INFO(ext);
    const std::string body = std::string("3") + ext + "\r\nabc\r\n0" + ext + "\r\n\r\n";
    const Outcome o = run_every_split(head + body);
    CHECK(o.code == Code::kOk);
    CHECK(o.log == expected);
    const Outcome r = run_every_split(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body, response_options());
    CHECK(r.code == Code::kOk);
  }
}

TEST_CASE("Parser bounds a chunk-size line, extensions included, by max_header_bytes") {
  Options opt;
  opt.limits.max_header_bytes = 1024;
  const std::string head = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
  const std::string fits = "1;a=" + std::string(1024 - 6, 'x') + "\r\nX\r\n0\r\n\r\n";
  CHECK(run(head + fits, {}, opt).code == Code::kOk);
  const std::string over = "1;a=" + std::string(1024 - 5, 'x') + "\r\nX\r\n0\r\n\r\n";
  CHECK(run(head + over, {}, opt).code == Code::kTooLarge);
  CHECK(run(head + std::string(2000, '0') + "1\r\nX\r\n0\r\n\r\n", {}, opt).code ==
        Code::kTooLarge);
}

TEST_CASE("Parser refuses an invalid Host and userinfo in an absolute-form target") {
  const auto with_host = [](std::string_view host) {
    return "GET / HTTP/1.1\r\nHost: " + std::string(host) + "\r\n\r\n";
  };
  for (const char* host : {"a b.com", "a.com/x",     "a.com, b.com", "a.com,b.com", "a.com:99999",
                           "a.com:x", "a.com:80:80", "[::1",         "[::1]x",      "[::1]:x",
                           "[zz::1]", "[v1.x]",      "a@b.com",      "a.com\\",     "a%zz.com",
                           "a%4",     ":80",         "a\"b",         "a.com:65536", "a.com:-1",
                           "[]"}) {
    INFO(host);
    const Outcome o = run_every_split(with_host(host));
    CHECK(o.code == Code::kMalformed);
    CHECK(o.log.empty());
    CHECK(run_every_split("GET / HTTP/1.0\r\nHost: " + std::string(host) + "\r\n\r\n").code ==
          Code::kMalformed);
  }
  for (const char* target :
       {"http://user@h/", "http://user:pass@h/x", "HTTP://@h/", "http:///x", "http://a.com:99999/",
        "https://a b/", "http://[::1/", "http://a,b/"}) {
    INFO(target);
    const Outcome o =
        run_every_split("GET " + std::string(target) + " HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(o.code == Code::kMalformed);
    CHECK(o.log.empty());
  }
}

TEST_CASE("Parser accepts every valid Host form, and an empty Host") {
  for (const char* host :
       {"a.com", "A.Example.COM:8080", "a.com:", "a.com:0", "a.com:65535", "1.2.3.4", "1.2.3.4:80",
        "[::1]", "[::1]:443", "[2001:db8::5]", "[::ffff:1.2.3.4]", "xn--bcher-kva.example", "a%2Eb",
        "a_b~c-d", "!$&'()*+;=", "localhost", ""}) {
    INFO(host);
    const Outcome o = run_every_split("GET / HTTP/1.1\r\nHost: " + std::string(host) + "\r\n\r\n");
    CHECK(o.code == Code::kOk);
  }
}

TEST_CASE("Parser accepts an HTTP/1.0 request without Host") {
  const Outcome o = run_every_split("POST /p HTTP/1.0\r\nContent-Length: 2\r\n\r\nab");
  CHECK(o.code == Code::kOk);
  CHECK(o.log ==
        "request POST /p 1.0\n  Content-Length: [2]\n  framing length length 2 close\n"
        "body ab\ncomplete\npaused\n");
}

TEST_CASE("Parser reports a request-target over the byte limit apart from a large head") {
  Options opt;
  opt.limits.max_header_bytes = 200;
  const std::string long_target = "GET /" + std::string(300, 'a') + " HTTP/1.1\r\nHost: h\r\n\r\n";
  const std::string long_field =
      "GET / HTTP/1.1\r\nHost: h\r\nX: " + std::string(300, 'a') + "\r\n\r\n";
  const std::string long_method = std::string(300, 'M') + " / HTTP/1.1\r\nHost: h\r\n\r\n";
  for (size_t cut : {size_t{0}, size_t{3}, size_t{100}, size_t{250}}) {
    INFO(cut);
    const std::vector<size_t> cuts = cut == 0 ? std::vector<size_t>{} : std::vector<size_t>{cut};
    const Outcome target = run(long_target, cuts, opt);
    CHECK(target.code == Code::kTooLarge);
    CHECK(error_status(target.status) == 414);
    CHECK(error_status(run(long_field, cuts, opt).status) == 431);
    CHECK(error_status(run(long_method, cuts, opt).status) == 431);
  }
  // A target that fits, in a head that does not: 431.
  const std::string fits = "GET /" + std::string(150, 'a') +
                           " HTTP/1.1\r\nHost: h\r\nX: " + std::string(100, 'b') + "\r\n\r\n";
  CHECK(error_status(run(fits, {}, opt).status) == 431);
}

TEST_CASE("error_status maps parse errors to the statuses a server answers with") {
  CHECK(error_status(Status(Code::kMalformed, "x")) == 400);
  CHECK(error_status(Status(Code::kTooLarge, "http: header section larger than the limit")) == 431);
  CHECK(error_status(Status(Code::kUnsupported, "x")) == 501);
  CHECK(error_status(Status(Code::kInternal, "x")) == 400);
}

TEST_CASE("Parser errors are sticky and name the side they came from") {
  Recorder rec;
  Parser parser(Parser::Mode::kRequest, rec);
  rec.parser = &parser;
  Result<size_t> n = parser.feed(as_bytes("GET / HTTP/1.1\r\nX : y\r\n\r\n"));
  REQUIRE_FALSE(n.ok());
  CHECK(n.status().code() == Code::kMalformed);
  CHECK(n.status().side() == Side::kDownstream);
  CHECK(parser.feed(as_bytes("GET / HTTP/1.1\r\nHost: h\r\n\r\n")).status().code() ==
        Code::kMalformed);
  CHECK(parser.finish().code() == Code::kMalformed);

  Recorder rec2;
  Parser upstream(Parser::Mode::kResponse, rec2);
  rec2.parser = &upstream;
  Result<size_t> m = upstream.feed(as_bytes("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n"));
  REQUIRE_FALSE(m.ok());
  CHECK(m.status().side() == Side::kUpstream);
}

// ---------------------------------------------------------------------------------------------
// Framing on the head.

namespace {

struct FramingCase {
  const char* what;
  Parser::Mode mode;
  bool request_was_head;
  std::string_view input;
  BodyFraming framing;
  std::optional<uint64_t> length;
};

}  // namespace

TEST_CASE("Parser puts the body's framing and Content-Length on each head it delivers") {
  using Mode = Parser::Mode;
  const FramingCase cases[] = {
      {"request with a length", Mode::kRequest, false,
       "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", BodyFraming::kContentLength,
       5},
      {"request with length 0", Mode::kRequest, false,
       "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", BodyFraming::kContentLength, 0},
      {"chunked request", Mode::kRequest, false,
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
       BodyFraming::kChunked, std::nullopt},
      {"request with neither", Mode::kRequest, false, "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
       BodyFraming::kNone, std::nullopt},
      {"CONNECT", Mode::kRequest, false, "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
       BodyFraming::kNone, std::nullopt},
      {"response with a length", Mode::kResponse, false,
       "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", BodyFraming::kContentLength, 3},
      {"chunked response", Mode::kResponse, false,
       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
       BodyFraming::kChunked, std::nullopt},
      {"response with neither", Mode::kResponse, false, "HTTP/1.1 200 OK\r\n\r\nabc",
       BodyFraming::kUntilClose, std::nullopt},
      {"response to HEAD", Mode::kResponse, true, "HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n",
       BodyFraming::kNone, 42},
      {"chunked response to HEAD", Mode::kResponse, true,
       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", BodyFraming::kNone, std::nullopt},
      {"204", Mode::kResponse, false, "HTTP/1.1 204 No Content\r\n\r\n", BodyFraming::kNone,
       std::nullopt},
      {"304 with a length", Mode::kResponse, false,
       "HTTP/1.1 304 Not Modified\r\nContent-Length: 42\r\n\r\n", BodyFraming::kNone, 42},
      {"100 Continue", Mode::kResponse, false, "HTTP/1.1 100 Continue\r\n\r\n", BodyFraming::kNone,
       std::nullopt},
  };
  for (const FramingCase& c : cases) {
    INFO(c.what);
    Recorder rec;
    Parser parser(c.mode, rec);
    parser.set_request_was_head(c.request_was_head);
    rec.parser = &parser;
    const Result<size_t> n = parser.feed(as_bytes(c.input));
    REQUIRE(n.ok());
    if (c.mode == Mode::kRequest) {
      REQUIRE(rec.requests.size() == 1);
      CHECK(rec.requests[0].framing == c.framing);
      CHECK(rec.requests[0].content_length == c.length);
    } else {
      REQUIRE(rec.responses.size() == 1);
      CHECK(rec.responses[0].framing == c.framing);
      CHECK(rec.responses[0].content_length == c.length);
    }
  }
}

TEST_CASE("Parser gives each pipelined head its own framing") {
  Recorder rec;
  Parser parser(Parser::Mode::kRequest, rec);
  rec.parser = &parser;
  std::string_view input =
      "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi"
      "GET /b HTTP/1.1\r\nHost: a\r\n\r\n"
      "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
  std::span<const uint8_t> rest = as_bytes(input);
  while (!rest.empty()) {
    const Result<size_t> n = parser.feed(rest);
    REQUIRE(n.ok());
    rest = rest.subspan(*n);
    if (parser.paused()) parser.resume();
  }
  REQUIRE(rec.requests.size() == 3);
  CHECK(rec.requests[0].framing == BodyFraming::kContentLength);
  CHECK(rec.requests[0].content_length == 2);
  CHECK(rec.requests[1].framing == BodyFraming::kNone);
  CHECK_FALSE(rec.requests[1].content_length);
  CHECK(rec.requests[2].framing == BodyFraming::kChunked);
  CHECK_FALSE(rec.requests[2].content_length);
}
