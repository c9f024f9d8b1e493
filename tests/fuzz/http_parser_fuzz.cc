// Fuzz target: the HTTP/1.1 parser (common/http/parser.h), as a request parser and as a response
// parser, with small limits. Input: one control byte, then the bytes of a connection.
//
//   control bit 0     the response parser is told the request was HEAD
//   control bits 1-7  the size of the pieces for the second, split run (1..128 bytes)
//
// Each parser runs twice, on the whole stream and cut into pieces, resuming after every
// message. Both runs must agree (same completed messages, same success or failure). Every
// head delivered must hold only valid names and values, must be writable by the writers, and
// must parse back to itself; a Content-Length body must have exactly that length; events must
// come in order; feed() must always make progress.

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common/http/parser.h"
#include "common/http/writer.h"

namespace {

using namespace coilgun;
using namespace coilgun::http;

[[noreturn]] void die() { std::abort(); }

bool same_headers(const std::vector<Header>& a, const std::vector<Header>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].name != b[i].name || a[i].value != b[i].value) return false;
  }
  return true;
}

void check_fields(const std::vector<Header>& fields) {
  for (const Header& h : fields) {
    if (!is_token(h.name) || !is_valid_field_value(h.value)) die();
    if (!h.value.empty() && (h.value.front() == ' ' || h.value.front() == '\t')) die();
    if (!h.value.empty() && (h.value.back() == ' ' || h.value.back() == '\t')) die();
  }
}

// Keeps the last head it saw, for the round trip check.
class Capture : public Parser::Handler {
 public:
  void on_request_head(RequestHead&& head) override { request = std::move(head); }
  void on_response_head(ResponseHead&& head) override { response = std::move(head); }
  void on_body(std::span<const uint8_t>) override {}
  void on_message_complete() override {}
  RequestHead request;
  ResponseHead response;
};

// Feeds |wire| to a fresh parser and returns what it delivered.
Capture reparse(Parser::Mode mode, bool was_head, const std::vector<uint8_t>& wire) {
  Capture capture;
  Parser parser(mode, capture, Parser::Limits{.max_header_bytes = 1 << 20, .max_headers = 1000});
  parser.set_request_was_head(was_head);
  Result<size_t> n = parser.feed(wire);
  if (!n.ok() || *n != wire.size()) die();
  return capture;
}

class Checker : public Parser::Handler {
 public:
  Checker(Parser::Mode mode, bool was_head) : mode_(mode), was_head_(was_head) {}

  void on_request_head(RequestHead&& head) override {
    if (mode_ != Parser::Mode::kRequest || in_message_) die();
    if (head.framing != parser->framing() || head.content_length != parser->content_length()) {
      die();
    }
    in_message_ = true;
    body_bytes_ = 0;
    if (!is_token(head.method) || !is_valid_target(head.target)) die();
    if (head.version_minor != 0 && head.version_minor != 1) die();
    check_fields(head.headers);
    std::vector<uint8_t> wire;
    if (!write_request_head(head, wire).ok()) die();
    const Capture back = reparse(mode_, was_head_, wire);
    if (back.request.method != head.method || back.request.target != head.target ||
        back.request.version_minor != head.version_minor ||
        !same_headers(back.request.headers, head.headers)) {
      die();
    }
    log_ += "q " + head.method + " " + head.target + " " + std::to_string(head.headers.size());
    log_ += "\n";
  }

  void on_response_head(ResponseHead&& head) override {
    if (mode_ != Parser::Mode::kResponse || in_message_) die();
    if (head.framing != parser->framing() || head.content_length != parser->content_length()) {
      die();
    }
    in_message_ = true;
    body_bytes_ = 0;
    if (head.status < 100 || head.status > 599) die();
    if (!is_valid_field_value(head.reason)) die();
    check_fields(head.headers);
    std::vector<uint8_t> wire;
    if (!write_response_head(head, wire).ok()) die();
    const Capture back = reparse(mode_, was_head_, wire);
    if (back.response.status != head.status ||
        (!head.reason.empty() && back.response.reason != head.reason) ||
        back.response.version_minor != head.version_minor ||
        !same_headers(back.response.headers, head.headers)) {
      die();
    }
    log_ += "r " + std::to_string(head.status) + " " + std::to_string(head.headers.size()) + "\n";
  }

  void on_body(std::span<const uint8_t> data) override {
    if (!in_message_ || data.empty() || trailers_seen_) die();
    body_bytes_ += data.size();
    for (uint8_t b : data) hash_ = (hash_ ^ b) * 1099511628211u;
  }

  void on_trailers(std::vector<Header>&& trailers) override {
    if (!in_message_ || trailers_seen_ || trailers.empty()) die();
    trailers_seen_ = true;
    check_fields(trailers);
  }

  void on_message_complete() override {
    if (!in_message_) die();
    if (parser->framing() == BodyFraming::kContentLength &&
        body_bytes_ != *parser->content_length()) {
      die();
    }
    if (parser->framing() == BodyFraming::kNone && body_bytes_ != 0) die();
    in_message_ = false;
    trailers_seen_ = false;
    log_ += "done " + std::to_string(body_bytes_) + " " + std::to_string(hash_) + "\n";
    completed_log_ = log_;
  }

  Parser* parser = nullptr;
  const std::string& completed_log() const { return completed_log_; }

 private:
  Parser::Mode mode_;
  bool was_head_;
  bool in_message_ = false;
  bool trailers_seen_ = false;
  uint64_t body_bytes_ = 0;
  uint64_t hash_ = 14695981039346656037u;
  std::string log_;
  std::string completed_log_;  // The log up to the last completed message.
};

struct RunResult {
  bool ok = true;
  std::string completed;
};

RunResult run(Parser::Mode mode, bool was_head, std::span<const uint8_t> stream, size_t piece) {
  Checker checker(mode, was_head);
  Parser parser(mode, checker, Parser::Limits{.max_header_bytes = 512, .max_headers = 8});
  parser.set_request_was_head(was_head);
  checker.parser = &parser;
  RunResult result;
  for (size_t at = 0; at < stream.size() && result.ok; at += piece) {
    // A copy per piece, so that AddressSanitizer sees any view kept past its feed() call.
    const size_t len = std::min(piece, stream.size() - at);
    std::vector<uint8_t> copy(stream.begin() + static_cast<ptrdiff_t>(at),
                              stream.begin() + static_cast<ptrdiff_t>(at + len));
    std::span<const uint8_t> rest(copy);
    while (!rest.empty()) {
      Result<size_t> n = parser.feed(rest);
      if (!n.ok()) {
        result.ok = false;
        break;
      }
      if (*n > rest.size()) die();
      if (*n == 0 && !parser.paused()) die();  // No progress and no reason.
      rest = rest.subspan(*n);
      if (parser.paused()) parser.resume();
    }
  }
  if (result.ok) {
    Status s = parser.finish();
    if (!s.ok() && s.code() != Code::kClosed) die();
  }
  result.completed = checker.completed_log();
  return result;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool was_head = (data[0] & 1) != 0;
  const size_t piece = (data[0] >> 1) + 1u;
  const std::span<const uint8_t> stream(data + 1, size - 1);
  for (Parser::Mode mode : {Parser::Mode::kRequest, Parser::Mode::kResponse}) {
    const RunResult whole = run(mode, was_head, stream, stream.size() + 1);
    const RunResult split = run(mode, was_head, stream, piece);
    if (whole.ok != split.ok || whole.completed != split.completed) die();
  }
  return 0;
}
