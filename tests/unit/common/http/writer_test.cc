#include "common/http/writer.h"

#include <catch2/catch.hpp>
#include <random>
#include <string>
#include <vector>

#include "tests/unit/common/http/parser_harness.h"

using namespace coilgun;
using namespace coilgun::http;
using namespace coilgun::http::testing;

// ---------------------------------------------------------------------------------------------
// Writers.

TEST_CASE("write_request_head writes a head the parser reads back") {
  RequestHead head;
  head.method = "POST";
  head.target = "/p?q=1";
  head.headers = {{"Host", "example.com"}, {"Content-Length", "2"}, {"X-Tab", "a\tb"}};
  Bytes out = {'>'};
  REQUIRE(write_request_head(head, out).ok());
  CHECK(as_string(out) ==
        ">POST /p?q=1 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 2\r\nX-Tab: a\tb\r\n"
        "\r\n");
  const Outcome o = run_every_split(as_string(out).substr(1) + "hi");
  CHECK(o.code == Code::kOk);
  CHECK(o.log ==
        "request POST /p?q=1 1.1\n  Host: [example.com]\n  Content-Length: [2]\n"
        "  X-Tab: [a\tb]\n  framing length length 2 keep-alive\nbody hi\ncomplete\npaused\n");

  head.version_minor = 0;
  head.headers = {};
  out.clear();
  REQUIRE(write_request_head(head, out).ok());
  CHECK(as_string(out) == "POST /p?q=1 HTTP/1.0\r\n\r\n");
}

TEST_CASE("write_response_head fills in the reason phrase from the status") {
  ResponseHead head;
  head.status = 404;
  head.headers = {{"Content-Length", "0"}};
  Bytes out;
  REQUIRE(write_response_head(head, out).ok());
  CHECK(as_string(out) == "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");

  head.status = 599;
  head.headers = {};
  out.clear();
  REQUIRE(write_response_head(head, out).ok());
  CHECK(as_string(out) == "HTTP/1.1 599 \r\n\r\n");
  CHECK(run_every_split(as_string(out), response_options()).code == Code::kOk);

  head.status = 200;
  head.reason = "Fine";
  head.version_minor = 0;
  out.clear();
  REQUIRE(write_response_head(head, out).ok());
  CHECK(as_string(out) == "HTTP/1.0 200 Fine\r\n\r\n");
}

TEST_CASE("Writers refuse header injection and append nothing") {
  const std::vector<Header> bad_fields[] = {
      {{"X", "a\r\nInjected: yes"}},
      {{"X", "a\nb"}},
      {{"X", "a\rb"}},
      {{"X", std::string("a\0b", 3)}},
      {{"X", "a\x01"}},
      {{"X", "a\x7f"}},
      {{"X\r\nInjected", "yes"}},
      {{"X Y", "a"}},
      {{"X:", "a"}},
      {{"", "a"}},
      {{"Host", "ok"}, {"Bad Name", "a"}},
  };
  for (const auto& fields : bad_fields) {
    RequestHead req{.method = "GET", .target = "/", .version_minor = 1, .headers = fields};
    Bytes out = {'x'};
    CHECK(write_request_head(req, out).code() == Code::kMalformed);
    CHECK(out == Bytes{'x'});
    ResponseHead res{.status = 200, .reason = "", .version_minor = 1, .headers = fields};
    CHECK(write_response_head(res, out).code() == Code::kMalformed);
    CHECK(out == Bytes{'x'});
    CHECK(write_last_chunk(fields, out).code() == Code::kMalformed);
    CHECK(out == Bytes{'x'});
  }

  Bytes out;
  const char* bad_targets[] = {"", "/a b", "/a\r\nX: y", "/a\tb", "/a#f", "/caf\xc3\xa9"};
  for (const char* target : bad_targets) {
    RequestHead req{.method = "GET", .target = target, .version_minor = 1, .headers = {}};
    CHECK(write_request_head(req, out).code() == Code::kMalformed);
  }
  const char* bad_methods[] = {"", "G T", "GET\r\n", "GE(T"};
  for (const char* method : bad_methods) {
    RequestHead req{.method = method, .target = "/", .version_minor = 1, .headers = {}};
    CHECK(write_request_head(req, out).code() == Code::kMalformed);
  }
  ResponseHead res{.status = 200, .reason = "OK\r\nX: y", .version_minor = 1, .headers = {}};
  CHECK(write_response_head(res, out).code() == Code::kMalformed);
  res.reason = "";
  res.status = 99;
  CHECK(write_response_head(res, out).code() == Code::kMalformed);
  res.status = 600;
  CHECK(write_response_head(res, out).code() == Code::kMalformed);
  res.status = 200;
  res.version_minor = 2;
  CHECK(write_response_head(res, out).code() == Code::kMalformed);
  CHECK(out.empty());
}

TEST_CASE("Chunk writers produce a body the parser reads back") {
  Bytes out;
  ResponseHead head{.status = 200,
                    .reason = "",
                    .version_minor = 1,
                    .headers = {{"Transfer-Encoding", "chunked"}}};
  REQUIRE(write_response_head(head, out).ok());
  write_chunk(as_bytes("hello "), out);
  write_chunk({}, out);  // Nothing: an empty chunk would end the body.
  const std::string big(300, 'z');
  write_chunk_header(big.size(), out);
  out.insert(out.end(), big.begin(), big.end());
  out.insert(out.end(), kCrlf.begin(), kCrlf.end());
  write_chunk_header(0, out);  // Nothing.
  REQUIRE(write_last_chunk(std::vector<Header>{{"X-Sum", "42"}}, out).ok());
  const std::string text = as_string(out);
  CHECK(text.find("6\r\nhello \r\n12c\r\n") != std::string::npos);
  CHECK(text.substr(text.size() - 18) == "\r\n0\r\nX-Sum: 42\r\n\r\n");

  const Outcome o = run_every_split(text, response_options());
  CHECK(o.code == Code::kOk);
  CHECK(o.log ==
        "response 200 [OK] 1.1\n  Transfer-Encoding: [chunked]\n  framing chunked keep-alive\n"
        "trailers\n  X-Sum: [42]\nbody hello " +
            big + "\ncomplete\npaused\n");

  Bytes last;
  REQUIRE(write_last_chunk({}, last).ok());
  CHECK(as_string(last) == "0\r\n\r\n");
}

TEST_CASE("Random messages survive a write and parse round trip at random split points") {
  std::mt19937 rng(20240611);
  auto pick = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); };
  const char* names[] = {"Accept", "X-Id", "Cache-Control", "cookie", "X-A_b.c~d"};
  const char* values[] = {"", "a", "text/html; q=0.9", "x\ty", "\xff\x80 obs", "\"quoted\""};
  for (int round = 0; round < 200; ++round) {
    const bool response = pick(2) == 1;
    std::vector<Header> fields;
    const size_t count = pick(6);
    for (size_t i = 0; i < count; ++i) fields.push_back({names[pick(5)], values[pick(6)]});
    // Field values come back trimmed: make the expectation trimmed too.
    std::string body(pick(3) == 0 ? 0 : pick(200), 'b');
    for (char& c : body) c = static_cast<char>(pick(256));
    const bool chunked = pick(2) == 1;
    std::vector<Header> sent = fields;
    if (!response) sent.insert(sent.begin(), {"Host", "h"});
    sent.push_back(chunked ? Header{"Transfer-Encoding", "chunked"}
                           : Header{"Content-Length", std::to_string(body.size())});
    Bytes wire;
    if (response) {
      REQUIRE(write_response_head({.status = 200 + static_cast<int>(pick(3)),
                                   .reason = "",
                                   .version_minor = 1,
                                   .headers = sent},
                                  wire)
                  .ok());
    } else {
      REQUIRE(write_request_head(
                  {.method = "PUT", .target = "/r", .version_minor = 1, .headers = sent}, wire)
                  .ok());
    }
    if (chunked) {
      for (size_t at = 0; at < body.size();) {
        const size_t len = std::min(body.size() - at, 1 + pick(50));
        write_chunk(as_bytes(std::string_view(body).substr(at, len)), wire);
        at += len;
      }
      REQUIRE(write_last_chunk({}, wire).ok());
    } else {
      wire.insert(wire.end(), body.begin(), body.end());
    }
    const std::string text = as_string(wire);
    Options opt;
    if (response) opt = response_options();
    std::vector<size_t> cuts;
    for (size_t at = pick(20) + 1; at < text.size(); at += pick(40) + 1) cuts.push_back(at);

    const Outcome o = run(text, cuts, opt);
    INFO("round " << round << ": " << o.message);
    REQUIRE(o.code == Code::kOk);
    REQUIRE(o == run(text, {}, opt));
    // And the parse agrees with what was written.
    {
      Recorder r;
      Parser p(opt.mode, r);
      r.parser = &p;
      REQUIRE(p.feed(as_bytes(text)).ok());
      REQUIRE(r.bodies.size() == 1);
      CHECK(r.bodies[0] == body);
      const std::vector<Header>& got =
          response ? r.responses.at(0).headers : r.requests.at(0).headers;
      REQUIRE(got.size() == sent.size());
      for (size_t i = 0; i < got.size(); ++i) {
        CHECK(got[i].name == sent[i].name);
        std::string trimmed = sent[i].value;
        while (!trimmed.empty() && (trimmed.back() == ' ' || trimmed.back() == '\t')) {
          trimmed.pop_back();
        }
        CHECK(got[i].value == trimmed);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Dates.

TEST_CASE("imf_fixdate formats RFC 9110's example and the calendar's edges") {
  CHECK(imf_fixdate(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT");  // RFC 9110 §5.6.7.
  CHECK(imf_fixdate(0) == "Thu, 01 Jan 1970 00:00:00 GMT");
  CHECK(imf_fixdate(951782400) == "Tue, 29 Feb 2000 00:00:00 GMT");
  CHECK(imf_fixdate(4102444799) == "Thu, 31 Dec 2099 23:59:59 GMT");
  CHECK(imf_fixdate(4107542400) == "Mon, 01 Mar 2100 00:00:00 GMT");  // 2100 is no leap year.
}

TEST_CASE("DateCache formats each second once and follows the clock") {
  DateCache dates;
  const std::string_view first = dates.get(784111777);
  CHECK(first == "Sun, 06 Nov 1994 08:49:37 GMT");
  CHECK(dates.get(784111777).data() == first.data());  // The same string, not a new one.
  CHECK(dates.get(784111778) == "Sun, 06 Nov 1994 08:49:38 GMT");
  CHECK(dates.get(0) == "Thu, 01 Jan 1970 00:00:00 GMT");
}
