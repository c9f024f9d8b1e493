#pragma once
// The parser harness the HTTP unit tests share: a Parser::Handler that writes every event as a
// line of text, and runners that feed an input whole, split at every byte boundary and byte by
// byte, and require the same events every way. Test code only; Catch2 assertions inside.

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/http/parser.h"

namespace coilgun::http::testing {

using Bytes = std::vector<uint8_t>;

inline const char* framing_name(BodyFraming f) {
  switch (f) {
    case BodyFraming::kNone:
      return "none";
    case BodyFraming::kContentLength:
      return "length";
    case BodyFraming::kChunked:
      return "chunked";
    case BodyFraming::kUntilClose:
      return "close";
  }
  return "?";
}

// Writes every event as a line of text, so that two runs can be compared whole. Body bytes
// are joined per message (how they are cut depends on how the input was fed).
class Recorder : public Parser::Handler {
 public:
  void on_request_head(RequestHead&& head) override {
    CHECK(head.framing == parser->framing());
    CHECK(head.content_length == parser->content_length());
    log += "request " + head.method + " " + head.target + " 1." +
           std::to_string(head.version_minor) + "\n";
    fields(head.headers);
    info();
    requests.push_back(std::move(head));
  }
  void on_response_head(ResponseHead&& head) override {
    CHECK(head.framing == parser->framing());
    CHECK(head.content_length == parser->content_length());
    log += "response " + std::to_string(head.status) + " [" + head.reason + "] 1." +
           std::to_string(head.version_minor) + "\n";
    fields(head.headers);
    info();
    responses.push_back(std::move(head));
  }
  void on_body(std::span<const uint8_t> data) override {
    if (data.empty()) log += "EMPTY BODY CALL\n";
    largest_body_call = std::max(largest_body_call, data.size());
    body.append(reinterpret_cast<const char*>(data.data()), data.size());
  }
  void on_trailers(std::vector<Header>&& trailers) override {
    log += "trailers\n";
    fields(trailers);
  }
  void on_message_complete() override {
    if (!body.empty()) log += "body " + body + "\n";
    bodies.push_back(body);
    body.clear();
    log += "complete\n";
  }

  Parser* parser = nullptr;
  std::string log;
  std::string body;
  std::vector<std::string> bodies;
  std::vector<RequestHead> requests;
  std::vector<ResponseHead> responses;
  size_t largest_body_call = 0;

 private:
  void fields(const std::vector<Header>& headers) {
    for (const Header& h : headers) log += "  " + h.name + ": [" + h.value + "]\n";
  }
  void info() {
    log += std::string("  framing ") + framing_name(parser->framing());
    if (parser->content_length()) log += " length " + std::to_string(*parser->content_length());
    log += parser->keep_alive() ? " keep-alive\n" : " close\n";
  }
};

struct Options {
  Parser::Mode mode = Parser::Mode::kRequest;
  Parser::Limits limits{};
  bool request_was_head = false;
  bool finish = false;  // Call finish() after the last byte.
};

struct Outcome {
  std::string log;
  Code code = Code::kOk;
  std::string message;
  Status status;  // As returned, for error_status().

  bool operator==(const Outcome& o) const { return log == o.log && code == o.code; }
};

// Feeds |input| cut at |cuts| (increasing offsets), each piece in a buffer of its own so that
// AddressSanitizer catches a view that outlives its feed() call; resumes after each message.
inline Outcome run(std::string_view input, const std::vector<size_t>& cuts, const Options& opt) {
  Recorder rec;
  Parser parser(opt.mode, rec, opt.limits);
  parser.set_request_was_head(opt.request_was_head);
  rec.parser = &parser;
  Outcome out;
  size_t from = 0;
  for (size_t i = 0; i <= cuts.size(); ++i) {
    const size_t to = i < cuts.size() ? cuts[i] : input.size();
    auto piece = std::make_unique<uint8_t[]>(std::max<size_t>(to - from, 1));
    std::memcpy(piece.get(), input.data() + from, to - from);
    std::span<const uint8_t> rest(piece.get(), to - from);
    from = to;
    while (!rest.empty()) {
      Result<size_t> n = parser.feed(rest);
      if (!n.ok()) {
        out.log = rec.log;
        out.code = n.status().code();
        out.message = n.status().message();
        out.status = n.status();
        return out;
      }
      rest = rest.subspan(*n);
      if (parser.paused()) {
        rec.log += "paused\n";
        parser.resume();
      }
    }
  }
  if (opt.finish) {
    Status s = parser.finish();
    out.code = s.code();
    out.message = s.message();
    out.status = s;
  }
  out.log = rec.log;
  return out;
}

// Parses |input| whole, in two parts at every split point, and byte by byte; requires every
// way to give the same events and result, and returns that outcome.
inline Outcome run_every_split(std::string_view input, const Options& opt = {}) {
  const Outcome whole = run(input, {}, opt);
  for (size_t cut = 1; cut < input.size(); ++cut) {
    const Outcome split = run(input, {cut}, opt);
    INFO("split at " << cut << ": " << split.message);
    REQUIRE(split.log == whole.log);
    REQUIRE(split.code == whole.code);
  }
  std::vector<size_t> every;
  for (size_t i = 1; i < input.size(); ++i) every.push_back(i);
  const Outcome bytewise = run(input, every, opt);
  INFO("byte by byte: " << bytewise.message);
  REQUIRE(bytewise.log == whole.log);
  REQUIRE(bytewise.code == whole.code);
  return whole;
}

inline Options response_options() {
  Options o;
  o.mode = Parser::Mode::kResponse;
  return o;
}

inline std::span<const uint8_t> as_bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

inline std::string as_string(const Bytes& b) { return std::string(b.begin(), b.end()); }

// An input the parser must refuse.
struct BadCase {
  const char* what;
  std::string input;
  bool in_body = false;  // The head is valid and delivered; the error comes after it.
};

// A refusal: the message never completes, and no head is delivered unless the error comes
// in the body.
inline void check_refused(const Outcome& o, const BadCase& c) {
  CHECK(o.log.find("complete") == std::string::npos);  // The message never completes.
  if (c.in_body) {
    CHECK_FALSE(o.log.empty());
  } else {
    CHECK(o.log.empty());  // No head was delivered.
  }
}

}  // namespace coilgun::http::testing
