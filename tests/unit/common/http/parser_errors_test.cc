#include <catch2/catch.hpp>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/http/parser.h"
#include "tests/unit/common/http/parser_harness.h"

using namespace coilgun;
using namespace coilgun::http;
using namespace coilgun::http::testing;

// The parser's refusals: limits, and malformed input. parser_test.cc has what it accepts and
// its strict and lenient rules.

// ---------------------------------------------------------------------------------------------
// Limits.

TEST_CASE("Parser answers kTooLarge to a 70 KB header section") {
  std::string input = "GET / HTTP/1.1\r\nHost: h\r\n";
  for (int i = 0; input.size() < 70 * 1024; ++i) {
    input += "X-Filler-" + std::to_string(i) + ": " + std::string(900, 'v') + "\r\n";
  }
  input += "\r\n";
  REQUIRE(input.size() > 70 * 1024);
  const Outcome whole = run(input, {}, {});
  CHECK(whole.code == Code::kTooLarge);
  CHECK(whole.log.empty());
  // Cut anywhere, including byte by byte.
  for (size_t cut : {size_t{1}, size_t{100}, input.size() / 2, input.size() - 3}) {
    CHECK(run(input, {cut}, {}).code == Code::kTooLarge);
  }
  std::vector<size_t> every;
  for (size_t i = 1; i < input.size(); ++i) every.push_back(i);
  CHECK(run(input, every, {}).code == Code::kTooLarge);

  // One long value, and one long target, count too.
  CHECK(
      run("GET / HTTP/1.1\r\nHost: h\r\nX: " + std::string(70000, 'a') + "\r\n\r\n", {}, {}).code ==
      Code::kTooLarge);
  CHECK(run("GET /" + std::string(70000, 'a') + " HTTP/1.1\r\nHost: h\r\n\r\n", {}, {}).code ==
        Code::kTooLarge);
}

TEST_CASE("Parser's header byte limit covers the whole head, exactly") {
  Options opt;
  const std::string head = "GET / HTTP/1.1\r\nHost: h\r\nX: abcdef\r\n\r\n";
  opt.limits.max_header_bytes = head.size();
  CHECK(run_every_split(head, opt).code == Code::kOk);
  opt.limits.max_header_bytes = head.size() - 1;
  CHECK(run_every_split(head, opt).code == Code::kTooLarge);
  // Empty lines before the request line are not part of it.
  opt.limits.max_header_bytes = head.size();
  CHECK(run_every_split("\r\n\r\n" + head, opt).code == Code::kOk);
  // Whitespace llhttp skips without a callback is counted all the same.
  const std::string padded = "GET / HTTP/1.1\r\nHost: h\r\nX:" + std::string(50, ' ') + "a\r\n\r\n";
  opt.limits.max_header_bytes = padded.size() - 1;
  CHECK(run(padded, {}, opt).code == Code::kTooLarge);
}

TEST_CASE("Parser answers kTooLarge to more header fields than the limit") {
  std::string head = "GET / HTTP/1.1\r\nHost: h\r\n";
  for (int i = 1; i < 128; ++i) head += "X-" + std::to_string(i) + ": v\r\n";
  CHECK(run(head + "\r\n", {}, {}).code == Code::kOk);  // 128 fields: the default limit.
  const Outcome o = run(head + "X-129: v\r\n\r\n", {}, {});
  CHECK(o.code == Code::kTooLarge);
  CHECK(o.log.empty());

  Options small;
  small.limits.max_headers = 2;
  CHECK(run_every_split("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\n\r\n", small).code == Code::kOk);
  CHECK(run_every_split("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n", small).code ==
        Code::kTooLarge);
}

TEST_CASE("Parser applies the limits to a trailer section on its own") {
  Options opt;
  opt.limits.max_headers = 2;
  opt.limits.max_header_bytes = 80;
  const std::string head = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
  CHECK(run_every_split(head + "1\r\na\r\n0\r\nA: 1\r\nB: 2\r\n\r\n", opt).code == Code::kOk);
  CHECK(run_every_split(head + "1\r\na\r\n0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", opt).code ==
        Code::kTooLarge);
  CHECK(run_every_split(head + "0\r\nA: " + std::string(80, 'x') + "\r\n\r\n", opt).code ==
        Code::kTooLarge);
}

// ---------------------------------------------------------------------------------------------
// Malformed input: 400 material.

TEST_CASE("Parser answers kMalformed to each malformed request, at every split point") {
  const std::string get = "GET / HTTP/1.1\r\nHost: h\r\n";
  const std::string post = "POST / HTTP/1.1\r\nHost: h\r\n";
  const std::string chunked = post + "Transfer-Encoding: chunked\r\n\r\n";
  const std::vector<BadCase> cases = {
      {"Transfer-Encoding with Content-Length",
       post + "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n"},
      {"Content-Length with Transfer-Encoding",
       post + "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
      {"two Content-Lengths", post + "Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"},
      {"two equal Content-Lengths", post + "Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc"},
      {"Content-Length list", post + "Content-Length: 3, 3\r\n\r\nabc"},
      {"non-numeric Content-Length", post + "Content-Length: abc\r\n\r\n"},
      {"negative Content-Length", post + "Content-Length: -1\r\n\r\n"},
      {"signed Content-Length", post + "Content-Length: +1\r\n\r\na"},
      {"empty Content-Length", post + "Content-Length: \r\n\r\n"},
      {"overflowing Content-Length", post + "Content-Length: 99999999999999999999999\r\n\r\n"},
      {"final coding not chunked", post + "Transfer-Encoding: gzip\r\n\r\nabc"},
      {"chunked then gzip", post + "Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"},
      {"chunked twice",
       post + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
      {"Transfer-Encoding in HTTP/1.0",
       "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
      {"chunk size not hex", chunked + "zz\r\nabc\r\n0\r\n\r\n", true},
      {"chunk size overflow", chunked + "1ffffffffffffffff\r\nabc\r\n0\r\n\r\n", true},
      {"space after chunk size", chunked + "3 \r\nabc\r\n0\r\n\r\n", true},
      {"chunk longer than its size", chunked + "3\r\nabcd\r\n0\r\n\r\n", true},
      {"chunk lines with bare LF", chunked + "3\nabc\n0\n\n", true},
      {"negative chunk size", chunked + "-3\r\nabc\r\n0\r\n\r\n", true},
      {"LF in a quoted chunk extension", chunked + "1;a=\"\n\"\r\nX\r\n0\r\n\r\n", true},
      {"CR in a quoted chunk extension", chunked + "1;a=\"\r\"\r\nX\r\n0\r\n\r\n", true},
      {"bare LF after a chunk extension", chunked + "1;a\n\r\nX\r\n0\r\n\r\n", true},
      {"LF in a value", get + "X: a\nY: b\r\n\r\n"},
      {"bare LF line ends", "GET / HTTP/1.1\nHost: h\n\n"},
      {"CR in a value", get + "X: a\rb\r\n\r\n"},
      {"NUL in a value", get + std::string("X: a\0b\r\n\r\n", 10)},
      {"control character in a value", get + "X: a\x01"
                                             "b\r\n\r\n"},
      {"DEL in a value", get + "X: a\x7f"
                               "b\r\n\r\n"},
      {"obs-fold", get + "X: a\r\n b\r\n\r\n"},
      {"obs-fold with a tab", get + "X: a\r\n\tb\r\n\r\n"},
      {"obs-fold of an empty value", get + "X:\r\n b\r\n\r\n"},
      {"obs-fold in a trailer", chunked + "0\r\nT: a\r\n b\r\n\r\n", true},
      {"whitespace before the first field", "GET / HTTP/1.1\r\n Host: h\r\n\r\n"},
      {"space before the colon", get + "X : a\r\n\r\n"},
      {"empty field name", get + ": a\r\n\r\n"},
      {"invalid name character", get + "X@Y: a\r\n\r\n"},
      {"invalid trailer name", chunked + "0\r\nT @: a\r\n\r\n", true},
      {"invalid method character", "G@T / HTTP/1.1\r\nHost: h\r\n\r\n"},
      {"method with a slash", "GET/1 / HTTP/1.1\r\nHost: h\r\n\r\n"},
      {"non-ASCII method", "G\xc3\x89T / HTTP/1.1\r\nHost: h\r\n\r\n"},
      {"empty method", " / HTTP/1.1\r\nHost: h\r\n\r\n"},
      {"request line with only a method", "GET\r\nHost: h\r\n\r\n"},
      {"space in the target", "GET /a b HTTP/1.1\r\nHost: h\r\n\r\n"},
      {"tab in the target", "GET /a\tb HTTP/1.1\r\nHost: h\r\n\r\n"},
      {"control character in the target", "GET /a\x01 HTTP/1.1\r\nHost: h\r\n\r\n"},
      {"non-ASCII target", "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n"},
      {"fragment in the target", "GET /a#b HTTP/1.1\r\nHost: h\r\n\r\n"},
      {"two spaces after the method", "GET  / HTTP/1.1\r\nHost: h\r\n\r\n"},
      {"two spaces before the version", "GET /  HTTP/1.1\r\nHost: h\r\n\r\n"},
      {"HTTP/0.9 request line", "GET /\r\n\r\n"},
      {"HTTP/1.2", "GET / HTTP/1.2\r\nHost: h\r\n\r\n"},
      {"HTTP/2.0", "GET / HTTP/2.0\r\nHost: h\r\n\r\n"},
      {"lower-case protocol", "GET / http/1.1\r\nHost: h\r\n\r\n"},
      {"HTTP/1.1 without Host", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"},
      {"two Host fields", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"},
      {"two Host fields in HTTP/1.0", "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"},
      {"bare LF before the request line", "\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"},
      {"chunk extension without a name", chunked + "1;\r\nX\r\n0\r\n\r\n", true},
      {"chunk extension with an empty value", chunked + "1;a=\r\nX\r\n0\r\n\r\n", true},
      {"space inside a chunk extension name", chunked + "1;a b\r\nX\r\n0\r\n\r\n", true},
      {"space inside a chunk extension value", chunked + "1;a=b c\r\nX\r\n0\r\n\r\n", true},
      {"whitespace before the end of a chunk extension", chunked + "1;a=b \r\nX\r\n0\r\n\r\n",
       true},
      {"chunk extension name not a token", chunked + "1;a@b\r\nX\r\n0\r\n\r\n", true},
      {"unterminated quoted chunk extension", chunked + "1;a=\"b\r\nX\r\n0\r\n\r\n", true},
      {"control character in a quoted chunk extension", chunked + "1;a=\"\x01\"\r\nX\r\n0\r\n\r\n",
       true},
      {"control character after a backslash in a chunk extension",
       chunked + "1;a=\"\\\x01\"\r\nX\r\n0\r\n\r\n", true},
      {"text after a quoted chunk extension", chunked + "1;a=\"b\"c\r\nX\r\n0\r\n\r\n", true},
      {"chunk extension without a chunk size", chunked + ";a\r\nX\r\n0\r\n\r\n", true},
      {"empty chunk-size line", chunked + "\r\nX\r\n0\r\n\r\n", true},
      {"no CRLF after chunk data", chunked + "1\r\nX0\r\n\r\n", true},
      {"garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"},
  };
  for (const BadCase& c : cases) {
    INFO(c.what);
    const Outcome o = run_every_split(c.input);
    CHECK(o.code == Code::kMalformed);
    check_refused(o, c);
  }
}

TEST_CASE("Parser answers kMalformed to each malformed response, at every split point") {
  const std::vector<BadCase> cases = {
      {"status 099", "HTTP/1.1 099 Odd\r\n\r\n"},
      {"status 600", "HTTP/1.1 600 Odd\r\n\r\n"},
      {"1xx in HTTP/1.0", "HTTP/1.0 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n\r\n"},
      {"1xx that closes the connection",
       "HTTP/1.1 100 Continue\r\nConnection: close\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"},
      {"four-digit status", "HTTP/1.1 2000 OK\r\n\r\n"},
      {"two spaces before the status", "HTTP/1.1  200 OK\r\n\r\n"},
      {"control character in the reason", "HTTP/1.1 200 O\x01K\r\n\r\n"},
      {"HTTP/2.0", "HTTP/2.0 200 OK\r\n\r\n"},
      {"Transfer-Encoding with Content-Length",
       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n"},
      {"Transfer-Encoding in HTTP/1.0",
       "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
      {"bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n", true},
      {"obs-fold", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n"},
      {"invalid Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n"},
      {"not HTTP", "<html>hello</html>"},
  };
  for (const BadCase& c : cases) {
    INFO(c.what);
    const Outcome o = run_every_split(c.input, response_options());
    CHECK(o.code == Code::kMalformed);
    check_refused(o, c);
  }
}

TEST_CASE("Parser answers kUnsupported to transfer codings other than chunked") {
  const Outcome req = run_every_split(
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n");
  CHECK(req.code == Code::kUnsupported);
  CHECK(req.log.empty());
  const Outcome res =
      run_every_split("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc", response_options());
  CHECK(res.code == Code::kUnsupported);
  CHECK(res.log.empty());
}
