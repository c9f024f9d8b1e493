#include "common/http.h"

#include <llhttp.h>

#include <algorithm>
#include <array>
#include <cstring>

namespace coilgun::http {

namespace {

constexpr char kHexDigits[] = "0123456789abcdef";

bool is_tchar(unsigned char c) {
  // tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|"
  //         / "~" / DIGIT / ALPHA  (RFC 9110 §5.6.2)
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  return std::strchr("!#$%&'*+-.^_`|~", c) != nullptr && c != '\0';
}

bool is_ows(char c) { return c == ' ' || c == '\t'; }

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && is_ows(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_ows(s.back())) s.remove_suffix(1);
  return s;
}

// Calls f(element) for each non-empty element of a comma-separated list, trimmed of OWS
// (RFC 9110 §5.6.1: empty elements are ignored). Stops early when f returns true.
template <typename F>
bool any_list_element(std::string_view list, F&& f) {
  while (true) {
    const size_t comma = list.find(',');
    const std::string_view element = trim_ows(list.substr(0, comma));
    if (!element.empty() && f(element)) return true;
    if (comma == std::string_view::npos) return false;
    list.remove_prefix(comma + 1);
  }
}

void append(std::vector<uint8_t>& out, std::string_view s) {
  out.insert(out.end(), s.begin(), s.end());
}

void append_hex(std::vector<uint8_t>& out, uint64_t n) {
  char buf[16];
  size_t len = 0;
  do {
    buf[sizeof(buf) - 1 - len] = kHexDigits[n & 0xf];
    n >>= 4;
    ++len;
  } while (n != 0);
  out.insert(out.end(), buf + sizeof(buf) - len, buf + sizeof(buf));
}

void append_decimal(std::vector<uint8_t>& out, unsigned n) {
  char buf[10];
  size_t len = 0;
  do {
    buf[sizeof(buf) - 1 - len] = static_cast<char>('0' + n % 10);
    n /= 10;
    ++len;
  } while (n != 0);
  out.insert(out.end(), buf + sizeof(buf) - len, buf + sizeof(buf));
}

Status check_fields(std::span<const Header> fields) {
  for (const Header& h : fields) {
    if (!is_token(h.name)) return Status(Code::kMalformed, "http: field name is not a token");
    if (!is_valid_field_value(h.value)) {
      return Status(Code::kMalformed, "http: field value holds CR, LF, NUL or a control");
    }
  }
  return Status::Ok();
}

void append_fields(std::vector<uint8_t>& out, std::span<const Header> fields) {
  for (const Header& h : fields) {
    append(out, h.name);
    append(out, ": ");
    append(out, h.value);
    append(out, kCrlf);
  }
}

void append_to_list_field(std::vector<Header>& headers, std::string_view name,
                          std::string_view element) {
  for (auto it = headers.rbegin(); it != headers.rend(); ++it) {
    if (!iequals(it->name, name)) continue;
    if (trim_ows(it->value).empty()) {
      it->value.assign(element);
    } else {
      it->value.append(", ");
      it->value.append(element);
    }
    return;
  }
  headers.push_back(Header{std::string(name), std::string(element)});
}

// Which span an llhttp data callback reports.
enum SpanKind : int { kMethodSpan, kUrlSpan, kVersionSpan, kStatusSpan, kFieldSpan, kValueSpan };

}  // namespace

// ---------------------------------------------------------------------------------------------
// Field helpers.

std::string to_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = ascii_lower(c);
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  }
  return true;
}

bool is_token(std::string_view s) {
  if (s.empty()) return false;
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return is_tchar(static_cast<unsigned char>(c)); });
}

bool is_valid_field_value(std::string_view s) {
  // field-value = *field-content; field-vchar = VCHAR / obs-text, with SP and HTAB between.
  return std::all_of(s.begin(), s.end(), [](char ch) {
    const auto c = static_cast<unsigned char>(ch);
    return c == '\t' || (c >= 0x20 && c != 0x7f);
  });
}

bool is_valid_target(std::string_view s) {
  if (s.empty()) return false;
  return std::all_of(s.begin(), s.end(), [](char ch) {
    const auto c = static_cast<unsigned char>(ch);
    return c > 0x20 && c < 0x7f && c != '#';
  });
}

std::optional<std::string_view> find(std::span<const Header> headers, std::string_view name) {
  for (const Header& h : headers) {
    if (iequals(h.name, name)) return std::string_view(h.value);
  }
  return std::nullopt;
}

bool has_token(std::span<const Header> headers, std::string_view name, std::string_view token) {
  for (const Header& h : headers) {
    if (!iequals(h.name, name)) continue;
    if (any_list_element(h.value, [&](std::string_view e) { return iequals(e, token); })) {
      return true;
    }
  }
  return false;
}

size_t remove(std::vector<Header>& headers, std::string_view name) {
  return std::erase_if(headers, [&](const Header& h) { return iequals(h.name, name); });
}

void set(std::vector<Header>& headers, std::string_view name, std::string_view value) {
  remove(headers, name);
  headers.push_back(Header{std::string(name), std::string(value)});
}

bool RequestHead::keep_alive() const {
  // RFC 9112 §9.3: "close" ends the connection; otherwise HTTP/1.1 persists and HTTP/1.0
  // persists only with "keep-alive".
  if (has_token(headers, "Connection", "close")) return false;
  if (version_minor >= 1) return true;
  return has_token(headers, "Connection", "keep-alive");
}

bool RequestHead::expects_continue() const {
  // RFC 9110 §10.1.1: "A server that receives a 100-continue expectation in an HTTP/1.0
  // request MUST ignore that expectation."
  return version_minor >= 1 && has_token(headers, "Expect", "100-continue");
}

bool ResponseHead::keep_alive() const {
  if (has_token(headers, "Connection", "close")) return false;
  if (version_minor >= 1) return true;
  return has_token(headers, "Connection", "keep-alive");
}

// ---------------------------------------------------------------------------------------------
// Parser.

// The llhttp state and the static callback table that routes llhttp's C callbacks to Parser.
struct Parser::Llhttp {
  llhttp_t parser;

  static Parser& self(llhttp_t* p) { return *static_cast<Parser*>(p->data); }

  static int on_message_begin(llhttp_t* p) { return self(p).on_message_begin(); }
  static int on_method(llhttp_t* p, const char* at, size_t n) {
    return self(p).on_span(kMethodSpan, at, n);
  }
  static int on_url(llhttp_t* p, const char* at, size_t n) {
    return self(p).on_span(kUrlSpan, at, n);
  }
  static int on_version(llhttp_t* p, const char* at, size_t n) {
    return self(p).on_span(kVersionSpan, at, n);
  }
  static int on_status(llhttp_t* p, const char* at, size_t n) {
    return self(p).on_span(kStatusSpan, at, n);
  }
  static int on_header_field(llhttp_t* p, const char* at, size_t n) {
    return self(p).on_span(kFieldSpan, at, n);
  }
  static int on_header_value(llhttp_t* p, const char* at, size_t n) {
    return self(p).on_span(kValueSpan, at, n);
  }
  static int on_headers_complete(llhttp_t* p) { return self(p).on_headers_complete(); }
  static int on_chunk_header(llhttp_t* p) { return self(p).on_chunk_header(); }
  static int on_body(llhttp_t* p, const char* at, size_t n) { return self(p).on_body_bytes(at, n); }
  static int on_message_complete(llhttp_t* p) { return self(p).on_message_done(); }

  // llhttp keeps a pointer to its settings for the parser's whole life: one static table.
  static const llhttp_settings_t* settings() {
    static const llhttp_settings_t table = [] {
      llhttp_settings_t s;
      llhttp_settings_init(&s);
      s.on_message_begin = on_message_begin;
      s.on_method = on_method;
      s.on_url = on_url;
      s.on_version = on_version;
      s.on_status = on_status;
      s.on_header_field = on_header_field;
      s.on_header_value = on_header_value;
      s.on_headers_complete = on_headers_complete;
      s.on_chunk_header = on_chunk_header;
      s.on_body = on_body;
      s.on_message_complete = on_message_complete;
      // Chunk extensions are parsed (and checked) by llhttp but not reported: a recipient
      // ignores the ones it does not know (RFC 9112 §7.1.1), and Coilgun knows none.
      return s;
    }();
    return &table;
  }
};

Parser::Parser(Mode mode, Handler& handler, Limits limits)
    : mode_(mode), handler_(handler), limits_(limits), ll_(std::make_unique<Llhttp>()) {
  llhttp_init(&ll_->parser, mode == Mode::kRequest ? HTTP_REQUEST : HTTP_RESPONSE,
              Llhttp::settings());
  ll_->parser.data = this;
  // No llhttp_set_lenient_* call, ever: every leniency is a request-smuggling vector.
}

Parser::~Parser() = default;

Status Parser::fail(Status s) {
  error_ = s.from(mode_ == Mode::kRequest ? Side::kDownstream : Side::kUpstream);
  return error_;
}

int Parser::user_error(Status s) {
  cb_error_ = s;
  llhttp_set_error_reason(&ll_->parser, s.message());
  return HPE_USER;
}

Status Parser::count_bytes(size_t n) {
  section_span_bytes_ += n;
  if (section_span_bytes_ > limits_.max_header_bytes) {
    return Status(Code::kTooLarge, "http: header section larger than the limit");
  }
  return Status::Ok();
}

// The byte scanner. llhttp 8.1 (in either mode) takes a line that starts with SP or HTAB
// inside a field section as a continuation of the previous value (obs-fold), and a field
// whose value was empty leaves no trace of the fold in the callbacks. RFC 9112 §5.2: "A
// server that receives an obs-fold in a request message ... MUST either reject the message
// by sending a 400 (Bad Request) ... or replace each received obs-fold with one or more SP";
// a proxy or user agent receiving one in a response must likewise discard or replace it. We
// reject. RFC 9112 §2.2: "A recipient that receives whitespace between the start-line and the
// first header field MUST either reject the message as invalid or ...": we reject that too.
// The same pass counts the exact size of the section for the limit, and the spaces in a
// request line (request-line = method SP request-target SP HTTP-version, RFC 9112 §3).
Status Parser::scan(const uint8_t* begin, const uint8_t* end) {
  for (const uint8_t* p = begin; p < end; ++p) {
    const uint8_t c = *p;
    switch (scan_) {
      case Scan::kBeforeStart:
        // RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the
        // request-line; llhttp skips them. They are not part of the head.
        if (c == '\r' || c == '\n') continue;
        scan_ = Scan::kStartLine;
        [[fallthrough]];
      case Scan::kStartLine:
        ++section_bytes_;
        if (c == ' ') ++start_line_spaces_;
        if (c == '\n') {
          if (mode_ == Mode::kRequest && start_line_spaces_ != 2) {
            return Status(Code::kMalformed, "http: extra whitespace in the request line");
          }
          scan_ = Scan::kLineStart;
        }
        break;
      case Scan::kLineStart:
        ++section_bytes_;
        if (c == ' ' || c == '\t') {
          return Status(Code::kMalformed, "http: obs-fold or whitespace before a field line");
        }
        if (c != '\n') scan_ = Scan::kInLine;
        break;
      case Scan::kInLine:
        ++section_bytes_;
        if (c == '\n') scan_ = Scan::kLineStart;
        break;
    }
  }
  if (section_bytes_ > limits_.max_header_bytes) {
    return Status(Code::kTooLarge, "http: header section larger than the limit");
  }
  return Status::Ok();
}

int Parser::on_message_begin() {
  method_.clear();
  target_.clear();
  reason_.clear();
  fields_.clear();
  trailers_.clear();
  interim_ = false;
  in_value_ = true;
  section_span_bytes_ = 0;
  return 0;
}

int Parser::on_span(int kind, const char* at, size_t len) {
  if (Status s = count_bytes(len); !s.ok()) return user_error(s);
  const std::string_view data(at, len);
  std::vector<Header>& list = phase_ == Phase::kTrailers ? trailers_ : fields_;
  switch (kind) {
    case kMethodSpan:
      method_.append(data);
      break;
    case kUrlSpan:
      target_.append(data);
      break;
    case kVersionSpan:
      break;  // llhttp parses the digits; read back in on_headers_complete().
    case kStatusSpan:
      reason_.append(data);
      break;
    case kFieldSpan:
      if (in_value_) {
        // A new field line. Checked before it is stored.
        if (list.size() >= limits_.max_headers) {
          return user_error(Status(Code::kTooLarge, "http: more header fields than the limit"));
        }
        list.emplace_back();
        in_value_ = false;
      }
      list.back().name.append(data);
      break;
    case kValueSpan:
      if (list.empty()) {
        return user_error(Status(Code::kInternal, "http: field value before any name"));
      }
      in_value_ = true;
      list.back().value.append(data);
      break;
    default:
      return user_error(Status(Code::kInternal, "http: unknown span"));
  }
  return 0;
}

// Checks names and values and trims each value's trailing whitespace (llhttp drops the
// leading OWS; RFC 9110 §5.5: a field value does not include leading or trailing whitespace).
Status Parser::finish_fields(std::vector<Header>& fields) {
  for (Header& h : fields) {
    // Also catches "Name : value": llhttp 8.1 reports the name as "Name " (RFC 9112 §5.1: a
    // server MUST reject whitespace between a field name and the colon with 400).
    if (!is_token(h.name)) return Status(Code::kMalformed, "http: field name is not a token");
    while (!h.value.empty() && is_ows(h.value.back())) h.value.pop_back();
    if (!is_valid_field_value(h.value)) {
      return Status(Code::kMalformed, "http: invalid character in a field value");
    }
  }
  return Status::Ok();
}

Status Parser::check_request_head() {
  if (!is_token(method_)) return Status(Code::kMalformed, "http: invalid method");
  // llhttp 8.1 outside strict mode lets HTAB and bytes 0x80-0xFF through in the target.
  if (!is_valid_target(target_)) return Status(Code::kMalformed, "http: invalid request-target");
  // RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code to any
  // HTTP/1.1 request message that lacks a Host header field and to any request message that
  // contains more than one Host header field line".
  const size_t hosts = static_cast<size_t>(std::count_if(
      fields_.begin(), fields_.end(), [](const Header& h) { return iequals(h.name, "Host"); }));
  if (hosts > 1) return Status(Code::kMalformed, "http: more than one Host field");
  if (hosts == 0 && ll_->parser.http_minor == 1) {
    return Status(Code::kMalformed, "http: HTTP/1.1 request without Host");
  }
  return Status::Ok();
}

Status Parser::check_response_head() {
  const int status = llhttp_get_status_code(&ll_->parser);
  // RFC 9110 §15: "Values outside the range 100..599 are invalid." (llhttp reads "HTTP/1.1
  // <SP><SP>200" as status 0.)
  if (status < 100 || status > 599) return Status(Code::kMalformed, "http: invalid status code");
  if (!is_valid_field_value(reason_)) {
    return Status(Code::kMalformed, "http: invalid character in the reason phrase");
  }
  interim_ = status < 200 && status != 101;
  return Status::Ok();
}

// For a message that may have a body: the transfer codings (RFC 9112 §6.1, §6.3).
Status Parser::check_framing(bool has_body) {
  const uint16_t flags = ll_->parser.flags;
  bool te_present = false;
  size_t codings = 0;
  bool last_is_chunked = false;
  for (const Header& h : fields_) {
    if (!iequals(h.name, "Transfer-Encoding")) continue;
    te_present = true;
    any_list_element(h.value, [&](std::string_view e) {
      ++codings;
      last_is_chunked = iequals(e, "chunked");
      return false;
    });
  }
  if (!has_body) return Status::Ok();
  if (!te_present) {
    if ((flags & (F_CHUNKED | F_TRANSFER_ENCODING)) != 0) {
      return Status(Code::kInternal, "http: llhttp saw a Transfer-Encoding we did not");
    }
    return Status::Ok();
  }
  // "A server or client that receives an HTTP/1.0 message containing a Transfer-Encoding
  // header field MUST treat the message as if the framing is faulty" (RFC 9112 §6.1).
  if (ll_->parser.http_minor == 0) {
    return Status(Code::kMalformed, "http: Transfer-Encoding in an HTTP/1.0 message");
  }
  if (!last_is_chunked) {
    // RFC 9112 §6.3: a request whose final coding is not chunked cannot be delimited: 400.
    // A response would run until close, still carrying a coding we cannot remove.
    if (mode_ == Mode::kRequest) {
      return Status(Code::kMalformed, "http: request's final transfer coding is not chunked");
    }
    return Status(Code::kUnsupported, "http: transfer coding other than chunked");
  }
  if (codings != 1) {
    // "gzip, chunked": the body stays gzip-coded once de-chunked, and the hop-by-hop
    // Transfer-Encoding field that says so is not forwarded. RFC 9112 §6.1: a server SHOULD
    // answer a transfer coding it does not understand with 501.
    return Status(Code::kUnsupported, "http: transfer coding other than chunked");
  }
  if ((flags & F_CHUNKED) == 0) {
    return Status(Code::kMalformed, "http: Transfer-Encoding not understood");
  }
  return Status::Ok();
}

int Parser::on_headers_complete() {
  llhttp_t* p = &ll_->parser;
  if (p->http_major != 1 || p->http_minor > 1) {
    return user_error(Status(Code::kMalformed, "http: version is not HTTP/1.0 or HTTP/1.1"));
  }
  if (Status s = finish_fields(fields_); !s.ok()) return user_error(s);
  const bool is_request = mode_ == Mode::kRequest;
  if (Status s = is_request ? check_request_head() : check_response_head(); !s.ok()) {
    return user_error(s);
  }
  content_length_.reset();
  if ((p->flags & F_CONTENT_LENGTH) != 0) content_length_ = p->content_length;

  bool has_body = true;
  int status = 0;
  if (is_request) {
    // CONNECT: llhttp takes whatever follows the head as another protocol (no body).
    has_body = p->method != HTTP_CONNECT;
  } else {
    status = llhttp_get_status_code(p);
    // RFC 9110 §6.4.1: responses to HEAD, and 1xx, 204 and 304 responses, have no content
    // whatever their fields say. llhttp 8.1 only knows about HEAD if told: tell it.
    if (request_was_head_ || status < 200 || status == 204 || status == 304) {
      has_body = false;
      p->flags |= F_SKIPBODY;
    }
  }
  if (Status s = check_framing(has_body); !s.ok()) return user_error(s);

  if (!has_body) {
    framing_ = BodyFraming::kNone;
  } else if ((p->flags & F_CHUNKED) != 0) {
    framing_ = BodyFraming::kChunked;
  } else if (content_length_) {
    framing_ = BodyFraming::kContentLength;
  } else {
    // RFC 9112 §6.3: a request without either field has no content; a response reads
    // until the connection closes.
    framing_ = is_request ? BodyFraming::kNone : BodyFraming::kUntilClose;
  }

  // The head's own rules (RequestHead::keep_alive() and ResponseHead::keep_alive() are the
  // same function of version and Connection).
  const bool head_keep_alive =
      !has_token(fields_, "Connection", "close") &&
      (p->http_minor >= 1 || has_token(fields_, "Connection", "keep-alive"));
  if (interim_) {
    // An interim response is followed by the final one on the same connection. llhttp
    // would discard everything after one that "closes" it (HTTP/1.0, where 1xx does not
    // exist, or Connection: close), so such a response is refused before it is delivered.
    if (!llhttp_should_keep_alive(p)) {
      return user_error(Status(Code::kMalformed, "http: interim response closes the connection"));
    }
    keep_alive_ = true;
  } else if (!is_request && status == 101) {
    keep_alive_ = false;  // Whatever follows is not HTTP.
  } else {
    keep_alive_ = head_keep_alive && framing_ != BodyFraming::kUntilClose;
  }
  pause_ = Pause::kHeadDone;
  return HPE_PAUSED;
}

int Parser::on_chunk_header() {
  // Pause after the last chunk's line so that feed() can scan the trailer section's bytes.
  if (ll_->parser.content_length == 0) {
    pause_ = Pause::kLastChunk;
    return HPE_PAUSED;
  }
  return 0;
}

int Parser::on_body_bytes(const char* at, size_t len) {
  if (len > 0) handler_.on_body({reinterpret_cast<const uint8_t*>(at), len});
  return 0;
}

int Parser::on_message_done() {
  // llhttp decides here whether it will parse another message; in its non-strict build it
  // silently discards everything after a message it thinks ends the connection. Keep our
  // view in line with it so that no byte is ever dropped unseen.
  if (!llhttp_should_keep_alive(&ll_->parser)) {
    if (interim_) {
      return user_error(Status(Code::kInternal, "http: llhttp ends the connection at a 1xx"));
    }
    keep_alive_ = false;
  }
  pause_ = Pause::kMessageDone;
  return HPE_PAUSED;
}

Result<size_t> Parser::feed(std::span<const uint8_t> data) {
  if (!error_.ok()) return error_;
  if (paused_) {
    return Status(Code::kInternal, "http: feed() while paused; call resume() first");
  }
  if (finished_) return Status(Code::kClosed, "http: feed() after finish()");
  if (data.empty()) return size_t{0};
  if (upgraded_) {
    return fail(Status(Code::kUnsupported, "http: bytes after 101 Switching Protocols"));
  }
  if (closed_) {
    return fail(Status(Code::kClosed, "http: bytes after a message that closes the connection"));
  }

  const uint8_t* const begin = data.data();
  const uint8_t* const end = begin + data.size();
  const uint8_t* p = begin;
  llhttp_t* ll = &ll_->parser;
  while (true) {
    pause_ = Pause::kNone;
    const llhttp_errno_t err =
        llhttp_execute(ll, reinterpret_cast<const char*>(p), static_cast<size_t>(end - p));
    if (err != HPE_OK && err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE) {
      if (!cb_error_.ok()) return fail(cb_error_);
      const char* reason = llhttp_get_error_reason(ll);
      return fail(Status(Code::kMalformed, reason != nullptr ? reason : "http: malformed"));
    }
    const uint8_t* const stop =
        err == HPE_OK ? end : reinterpret_cast<const uint8_t*>(llhttp_get_error_pos(ll));
    if (phase_ != Phase::kBody) {
      if (Status s = scan(p, stop); !s.ok()) return fail(s);
    }
    p = stop;
    if (err == HPE_OK) break;
    if (err == HPE_PAUSED_UPGRADE) {
      // CONNECT, or a request with "Connection: upgrade": Coilgun tunnels neither, so the
      // caller answers the request (CONNECT: 501) and, if the connection survives, what
      // follows is parsed as HTTP again. The Upgrade field is hop-by-hop and never forwarded,
      // so the server answers as if it had not been asked (RFC 9110 §7.8: it MAY ignore it).
      // A 101 response never gets here: feed() stops at upgraded_ first.
      llhttp_resume_after_upgrade(ll);
      continue;
    }
    // HPE_PAUSED: one of ours.
    if (pause_ == Pause::kHeadDone) {
      phase_ = Phase::kBody;
      if (mode_ == Mode::kRequest) {
        RequestHead head;
        head.method = std::move(method_);
        head.target = std::move(target_);
        head.version_minor = ll->http_minor;
        head.headers = std::move(fields_);
        handler_.on_request_head(std::move(head));
      } else {
        ResponseHead head;
        head.status = llhttp_get_status_code(ll);
        head.reason = std::move(reason_);
        head.version_minor = ll->http_minor;
        head.headers = std::move(fields_);
        handler_.on_response_head(std::move(head));
      }
      llhttp_resume(ll);
      continue;  // Even at the end of the data: a message without a body completes now.
    }
    if (pause_ == Pause::kLastChunk) {
      phase_ = Phase::kTrailers;
      scan_ = Scan::kLineStart;
      section_bytes_ = 0;
      section_span_bytes_ = 0;
      in_value_ = true;
      llhttp_resume(ll);
      continue;
    }
    if (pause_ != Pause::kMessageDone) {
      return fail(Status(Code::kInternal, "http: llhttp paused for no reason we know"));
    }
    if (phase_ == Phase::kTrailers) {
      if (Status s = finish_fields(trailers_); !s.ok()) return fail(s);
      if (!trailers_.empty()) handler_.on_trailers(std::move(trailers_));
    }
    const bool switched = mode_ == Mode::kResponse && llhttp_get_status_code(ll) == 101;
    handler_.on_message_complete();
    phase_ = Phase::kHead;
    scan_ = Scan::kBeforeStart;
    section_bytes_ = 0;
    start_line_spaces_ = 0;
    paused_ = true;
    if (switched) upgraded_ = true;
    if (!keep_alive_) closed_ = true;
    break;
  }
  return static_cast<size_t>(p - begin);
}

void Parser::resume() {
  if (!paused_) return;
  paused_ = false;
  llhttp_resume(&ll_->parser);
}

Status Parser::finish() {
  if (!error_.ok()) return error_;
  if (finished_) return Status::Ok();
  finished_ = true;
  if (paused_ || upgraded_) return Status::Ok();
  if (phase_ == Phase::kHead && scan_ == Scan::kBeforeStart) return Status::Ok();
  if (phase_ == Phase::kBody && framing_ == BodyFraming::kUntilClose) {
    // RFC 9112 §6.3: "the message body length is determined by the number of octets
    // received prior to the server closing the connection."
    keep_alive_ = false;
    handler_.on_message_complete();
    return Status::Ok();
  }
  return fail(Status(Code::kClosed, "http: connection closed before the message was complete"));
}

// ---------------------------------------------------------------------------------------------
// Writers.

Status write_request_head(const RequestHead& head, std::vector<uint8_t>& out) {
  if (!is_token(head.method)) return Status(Code::kMalformed, "http: method is not a token");
  if (!is_valid_target(head.target)) {
    return Status(Code::kMalformed, "http: invalid request-target");
  }
  if (head.version_minor != 0 && head.version_minor != 1) {
    return Status(Code::kMalformed, "http: version is not HTTP/1.0 or HTTP/1.1");
  }
  COILGUN_TRY(check_fields(head.headers));
  append(out, head.method);
  append(out, " ");
  append(out, head.target);
  append(out, head.version_minor == 1 ? " HTTP/1.1\r\n" : " HTTP/1.0\r\n");
  append_fields(out, head.headers);
  append(out, kCrlf);
  return Status::Ok();
}

Status write_response_head(const ResponseHead& head, std::vector<uint8_t>& out) {
  if (head.status < 100 || head.status > 599) {
    return Status(Code::kMalformed, "http: status code outside 100..599");
  }
  if (!is_valid_field_value(head.reason)) {
    return Status(Code::kMalformed, "http: reason phrase holds CR, LF, NUL or a control");
  }
  if (head.version_minor != 0 && head.version_minor != 1) {
    return Status(Code::kMalformed, "http: version is not HTTP/1.0 or HTTP/1.1");
  }
  COILGUN_TRY(check_fields(head.headers));
  append(out, head.version_minor == 1 ? "HTTP/1.1 " : "HTTP/1.0 ");
  append_decimal(out, static_cast<unsigned>(head.status));
  append(out, " ");
  append(out, head.reason.empty() ? status_reason(head.status) : std::string_view(head.reason));
  append(out, kCrlf);
  append_fields(out, head.headers);
  append(out, kCrlf);
  return Status::Ok();
}

void write_chunk_header(uint64_t size, std::vector<uint8_t>& out) {
  if (size == 0) return;
  append_hex(out, size);
  append(out, kCrlf);
}

void write_chunk(std::span<const uint8_t> data, std::vector<uint8_t>& out) {
  if (data.empty()) return;
  write_chunk_header(data.size(), out);
  out.insert(out.end(), data.begin(), data.end());
  append(out, kCrlf);
}

Status write_last_chunk(std::span<const Header> trailers, std::vector<uint8_t>& out) {
  COILGUN_TRY(check_fields(trailers));
  append(out, "0\r\n");
  append_fields(out, trailers);
  append(out, kCrlf);
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Proxy helpers.

void remove_hop_by_hop(std::vector<Header>& headers) {
  // RFC 9110 §7.6.1: "Intermediaries MUST parse a received Connection header field before a
  // message is forwarded and, for each connection-option in this field, remove any header or
  // trailer field(s) from the message with the same name as the connection-option, and then
  // remove the Connection header field itself". Proxy-Connection, Keep-Alive, TE,
  // Transfer-Encoding and Upgrade are connection-specific whether listed or not; Trailer
  // announces fields of a chunked body that this proxy re-frames.
  static constexpr std::array<std::string_view, 7> kAlways = {
      "Connection", "Keep-Alive",        "Proxy-Connection", "TE",
      "Trailer",    "Transfer-Encoding", "Upgrade"};
  std::vector<std::string_view> listed;
  for (const Header& h : headers) {
    if (!iequals(h.name, "Connection")) continue;
    any_list_element(h.value, [&](std::string_view e) {
      if (!iequals(e, "Host") && !iequals(e, "Content-Length")) listed.push_back(e);
      return false;
    });
  }
  // |listed| views the Connection values: copy them before erasing anything.
  std::vector<std::string> names(listed.begin(), listed.end());
  std::erase_if(headers, [&](const Header& h) {
    for (std::string_view n : kAlways) {
      if (iequals(h.name, n)) return true;
    }
    for (const std::string& n : names) {
      if (iequals(h.name, n)) return true;
    }
    return false;
  });
}

void add_via(std::vector<Header>& headers, std::string_view received_by) {
  append_to_list_field(headers, "Via", received_by);
}

void add_forwarded_for(std::vector<Header>& headers, std::string_view client_ip) {
  append_to_list_field(headers, "X-Forwarded-For", client_ip);
}

std::string_view status_reason(int status) {
  // RFC 9110 §15 and the other codes in IANA's HTTP Status Code Registry that servers send.
  struct Reason {
    int status;
    std::string_view text;
  };
  static constexpr Reason kReasons[] = {
      {100, "Continue"},
      {101, "Switching Protocols"},
      {102, "Processing"},
      {103, "Early Hints"},
      {200, "OK"},
      {201, "Created"},
      {202, "Accepted"},
      {203, "Non-Authoritative Information"},
      {204, "No Content"},
      {205, "Reset Content"},
      {206, "Partial Content"},
      {207, "Multi-Status"},
      {208, "Already Reported"},
      {226, "IM Used"},
      {300, "Multiple Choices"},
      {301, "Moved Permanently"},
      {302, "Found"},
      {303, "See Other"},
      {304, "Not Modified"},
      {305, "Use Proxy"},
      {307, "Temporary Redirect"},
      {308, "Permanent Redirect"},
      {400, "Bad Request"},
      {401, "Unauthorized"},
      {402, "Payment Required"},
      {403, "Forbidden"},
      {404, "Not Found"},
      {405, "Method Not Allowed"},
      {406, "Not Acceptable"},
      {407, "Proxy Authentication Required"},
      {408, "Request Timeout"},
      {409, "Conflict"},
      {410, "Gone"},
      {411, "Length Required"},
      {412, "Precondition Failed"},
      {413, "Content Too Large"},
      {414, "URI Too Long"},
      {415, "Unsupported Media Type"},
      {416, "Range Not Satisfiable"},
      {417, "Expectation Failed"},
      {418, "I'm a teapot"},
      {421, "Misdirected Request"},
      {422, "Unprocessable Content"},
      {423, "Locked"},
      {424, "Failed Dependency"},
      {425, "Too Early"},
      {426, "Upgrade Required"},
      {428, "Precondition Required"},
      {429, "Too Many Requests"},
      {431, "Request Header Fields Too Large"},
      {451, "Unavailable For Legal Reasons"},
      {500, "Internal Server Error"},
      {501, "Not Implemented"},
      {502, "Bad Gateway"},
      {503, "Service Unavailable"},
      {504, "Gateway Timeout"},
      {505, "HTTP Version Not Supported"},
      {506, "Variant Also Negotiates"},
      {507, "Insufficient Storage"},
      {508, "Loop Detected"},
      {510, "Not Extended"},
      {511, "Network Authentication Required"},
  };
  for (const Reason& r : kReasons) {
    if (r.status == status) return r.text;
  }
  return "";
}

}  // namespace coilgun::http
