#include "common/http/parser.h"

#include <llhttp.h>

#include <algorithm>

namespace coilgun::http {

namespace {

// Which span an llhttp data callback reports.
enum SpanKind : int { kUrlSpan, kStatusSpan, kFieldSpan, kValueSpan };

// Parse errors over the head's byte limit. error_status() tells them apart by address.
constexpr char kTargetTooLong[] = "http: request-target longer than the header limit";
constexpr char kHeadTooLarge[] = "http: header section larger than the limit";

}  // namespace

// ---------------------------------------------------------------------------------------------
// Parser.

// The llhttp state and the static callback table that routes llhttp's C callbacks to Parser.
struct Parser::Llhttp {
  llhttp_t parser;

  static Parser& self(llhttp_t* p) { return *static_cast<Parser*>(p->data); }

  static int on_message_begin(llhttp_t* p) { return self(p).on_message_begin(); }
  static int on_url(llhttp_t* p, const char* at, size_t n) {
    return self(p).on_span(kUrlSpan, at, n);
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
  static int on_body(llhttp_t* p, const char* at, size_t n) { return self(p).on_body_bytes(at, n); }
  static int on_message_complete(llhttp_t* p) { return self(p).on_message_done(); }

  // llhttp keeps a pointer to its settings for the parser's whole life: one static table.
  static const llhttp_settings_t* settings() {
    static const llhttp_settings_t table = [] {
      llhttp_settings_t s;
      llhttp_settings_init(&s);
      s.on_message_begin = on_message_begin;
      // No on_method: llhttp sees a stand-in (feed_method()); the scanner reads the method.
      // No on_version: llhttp parses the digits; read back in on_headers_complete().
      s.on_url = on_url;
      s.on_status = on_status;
      s.on_header_field = on_header_field;
      s.on_header_value = on_header_value;
      s.on_headers_complete = on_headers_complete;
      s.on_body = on_body;
      s.on_message_complete = on_message_complete;
      // Chunk extensions never reach llhttp (scan_chunked()).
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

// ---- The byte scanner --------------------------------------------------------------------
//
// llhttp 8.1 is lenient in ways no flag turns off, and some of them end a head early: a CR
// not followed by LF is taken as a line end, so "CR LF CR x" ends the head and "x" starts the
// body (the class of Node.js CVE-2025-23167). A check after llhttp has parsed
// the bytes comes too late for that, so every byte of a head, a trailer section and a
// chunk-size line is scanned here first, and llhttp is given only what passed, up to the end
// of the section the scanner found. The scanner also refuses what llhttp lets through:
//   * RFC 9112 §2.2: "A recipient of such a bare CR MUST consider that element to be invalid
//     or replace each bare CR with SP before processing the element or forwarding the
//     message." We refuse it. A bare LF is refused too (llhttp does so as well): a line ends
//     with CRLF only, so the scanner and llhttp always agree on where a head ends.
//   * RFC 9112 §5.2: "A server that receives an obs-fold in a request message ... MUST either
//     reject the message by sending a 400 (Bad Request) ... or replace each received obs-fold
//     with one or more SP"; a proxy or user agent receiving one in a response must likewise
//     discard or replace it. We reject. llhttp 8.1 takes the fold as a continuation, and a
//     field whose value was empty leaves no trace of it in the callbacks.
//   * RFC 9112 §2.2: "A recipient that receives whitespace between the start-line and the
//     first header field MUST either reject the message as invalid or ...": we reject.
//   * request-line = method SP request-target SP HTTP-version (RFC 9112 §3): exactly two SP.
// It counts the section's exact size for the limit before llhttp sees a byte of it.

// The next run of bytes for llhttp, from |p|.
Status Parser::next_run(const uint8_t* p, const uint8_t* end, Run& run) {
  run = Run{p, end, end};
  if (phase_ != Phase::kBody) return scan_section(p, end, run);
  if (framing_ == BodyFraming::kChunked) return scan_chunked(p, end, run);
  return Status::Ok();  // Content-Length or close-delimited content: llhttp counts it.
}

// A head or trailer section: the run ends where the section does.
Status Parser::scan_section(const uint8_t* p, const uint8_t* end, Run& run) {
  for (const uint8_t* q = p; q < end; ++q) {
    const bool owned = scanner_owns();
    COILGUN_TRY(scan_byte(*q));
    if (owned) {
      if (scanner_owns()) {
        run.begin = q + 1;  // Before the start line, or the method: llhttp never sees it.
        continue;
      }
      // *q is the first byte llhttp sees: the status line's, or the SP after a method.
      if (mode_ == Mode::kRequest) COILGUN_TRY(feed_method());
    }
    if (scan_ == Scan::kDone) {
      run.end = run.next = q + 1;
      break;
    }
  }
  return Status::Ok();
}

void Parser::start_section(Scan at) {
  scan_ = at;
  cr_ = false;
  section_bytes_ = 0;
  start_line_spaces_ = 0;
  in_value_ = true;
}

Status Parser::scan_byte(uint8_t c) {
  if (scan_ == Scan::kBeforeStart) return scan_before_start(c);
  if (++section_bytes_ > limits_.max_header_bytes) return head_too_large(c);
  if (cr_) {
    cr_ = false;
    if (c != '\n') return Status(Code::kMalformed, "http: CR not followed by LF");
    return end_line();
  }
  if (c == '\r') {
    cr_ = true;
    return Status::Ok();
  }
  if (c == '\n') return Status(Code::kMalformed, "http: LF without CR");
  switch (scan_) {
    case Scan::kMethod:
      return scan_method(c);
    case Scan::kStartLine:
      if (c == ' ') ++start_line_spaces_;
      return Status::Ok();
    case Scan::kLineStart:
      if (c == ' ' || c == '\t') {
        return Status(Code::kMalformed, "http: obs-fold or whitespace before a field line");
      }
      scan_ = Scan::kInLine;
      return Status::Ok();
    case Scan::kInLine:
      return Status::Ok();
    default:
      return Status(Code::kInternal, "http: scanned a byte after the end of a section");
  }
}

// RFC 9112 §2.2: "a server that is expecting to receive and parse a request-line SHOULD ignore
// at least one empty line (CRLF) received prior to the request-line". Empty lines are skipped
// (before a status line too) and are not part of the head; a bare CR or LF is refused.
Status Parser::scan_before_start(uint8_t c) {
  // Bounded like a head: a peer sending nothing but CRLF must not hold the connection forever.
  if (++blank_bytes_ > limits_.max_header_bytes) {
    return Status(Code::kMalformed, "http: too many empty lines before the start line");
  }
  if (cr_) {
    cr_ = false;
    if (c == '\n') return Status::Ok();
    return Status(Code::kMalformed, "http: CR not followed by LF");
  }
  if (c == '\r') {
    cr_ = true;
    return Status::Ok();
  }
  if (c == '\n') return Status(Code::kMalformed, "http: LF without CR");
  start_section(mode_ == Mode::kRequest ? Scan::kMethod : Scan::kStartLine);
  blank_bytes_ = 0;
  method_.clear();
  return scan_byte(c);
}

// method = token (RFC 9110 §9.1), case-sensitive, ended by the request line's first SP.
Status Parser::scan_method(uint8_t c) {
  if (c != ' ') {
    if (!is_tchar(c)) return Status(Code::kMalformed, "http: invalid method");
    method_.push_back(static_cast<char>(c));
    return Status::Ok();
  }
  if (method_.empty()) return Status(Code::kMalformed, "http: invalid method");
  // Methods are case-sensitive (RFC 9110 §9.1), so "head" is not HEAD, and it is framed as any
  // other method; but a backend that matched methods without case would frame it as a HEAD or
  // CONNECT, out of step with this proxy. Such look-alikes are refused.
  if ((method_ != "HEAD" && iequals(method_, "HEAD")) ||
      (method_ != "CONNECT" && iequals(method_, "CONNECT"))) {
    return Status(Code::kMalformed, "http: HEAD or CONNECT in the wrong case");
  }
  start_line_spaces_ = 1;
  scan_ = Scan::kStartLine;
  return Status::Ok();
}

Status Parser::end_line() {
  switch (scan_) {
    case Scan::kMethod:
      return Status(Code::kMalformed, "http: request line without a target");
    case Scan::kStartLine:
      if (mode_ == Mode::kRequest && start_line_spaces_ != 2) {
        return Status(Code::kMalformed, "http: request line is not method SP target SP version");
      }
      scan_ = Scan::kLineStart;
      return Status::Ok();
    case Scan::kLineStart:
      scan_ = Scan::kDone;  // The empty line that ends the section.
      return Status::Ok();
    case Scan::kInLine:
      scan_ = Scan::kLineStart;
      return Status::Ok();
    default:
      return Status(Code::kInternal, "http: line end outside a section");
  }
}

// The error for byte |c|, which takes the section over its limit. RFC 9112 §3: "A server that
// receives a request-target longer than any URI it wishes to parse MUST respond with a 414 (URI
// Too Long) status code". Coilgun wishes to parse any target that fits in the head's byte
// limit; one that takes the head over it on its own gets 414, anything else 431.
Status Parser::head_too_large(uint8_t c) const {
  const bool in_target =
      mode_ == Mode::kRequest && scan_ == Scan::kStartLine && start_line_spaces_ == 1 && c != ' ';
  return Status(Code::kTooLarge, in_target ? kTargetTooLong : kHeadTooLarge);
}

// llhttp 8.1 knows a fixed list of methods and refuses every other token (HPE_INVALID_METHOD),
// while any token is a method (RFC 9110 §9.1; "QUERY", WebDAV's, extensions). So llhttp is
// never shown the method: it gets a stand-in with the same framing, and RequestHead::method
// carries the token as received. llhttp 8.1 treats a request's method specially in two cases
// only: CONNECT (an authority-form target, no body, then another protocol) and PRI (the
// HTTP/2 preface). Every other method, HEAD included, is framed by Content-Length and
// Transfer-Encoding alone (RFC 9112 §6.3; HEAD changes only the response's framing, which the
// agent handles with set_request_was_head()). So CONNECT stands for itself and GET for every
// other token: no substitution changes how a body is framed.
Status Parser::feed_method() {
  static constexpr std::string_view kConnect = "CONNECT";
  static constexpr std::string_view kOther = "GET";
  const std::string_view stand_in = method_ == kConnect ? kConnect : kOther;
  const auto* p = reinterpret_cast<const uint8_t*>(stand_in.data());
  if (execute(p, p + stand_in.size()) != HPE_OK) {
    return Status(Code::kInternal, "http: llhttp refused the stand-in method");
  }
  return Status::Ok();
}

// ---- The chunked-body scanner ------------------------------------------------------------
//
//   chunked-body   = *chunk last-chunk trailer-section CRLF
//   chunk          = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//   chunk-size     = 1*HEXDIG
//   last-chunk     = 1*("0") [ chunk-ext ] CRLF
//   chunk-ext      = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
//   chunk-ext-val  = token / quoted-string                        (RFC 9112 §7.1, §7.1.1)
//
// llhttp 8.1 refuses two valid extension forms ("1;a=b;c=d", and a quoted-pair in a quoted
// value) and passes a bare CR in some states. The scanner reads each chunk-size line itself:
// llhttp is given the size digits and the CRLF, never the extension bytes ("a recipient MUST
// ignore unrecognized chunk extensions", §7.1.1), and chunk data as it is. A chunk-size line
// is only known to be one in the body of a chunked message, which is the only place this runs.

// Runs of bytes for llhttp from a chunked body: extension bytes are dropped between runs, and
// a run ends after the last chunk's line (the trailer section is scanned as a section).
Status Parser::scan_chunked(const uint8_t* p, const uint8_t* end, Run& run) {
  const uint8_t* q = p;
  while (q < end) {
    if (chunk_ == Chunk::kData) {
      const auto n = static_cast<size_t>(std::min<uint64_t>(chunk_left_, end - q));
      q += n;
      chunk_left_ -= n;
      if (chunk_left_ == 0) chunk_ = Chunk::kDataCr;
      continue;
    }
    COILGUN_TRY(chunk_byte(*q));
    if (chunk_ >= Chunk::kBws) {  // An extension byte: dropped.
      if (q == run.begin) {
        run.begin = ++q;
        continue;
      }
      run.end = q;
      run.next = q + 1;
      return Status::Ok();
    }
    ++q;
    if (phase_ == Phase::kTrailers) break;
  }
  run.end = run.next = q;
  return Status::Ok();
}

Status Parser::chunk_byte(uint8_t c) {
  switch (chunk_) {
    case Chunk::kDataCr:
      if (c != '\r') return Status(Code::kMalformed, "http: chunk data longer than its size");
      chunk_ = Chunk::kDataLf;
      return Status::Ok();
    case Chunk::kDataLf:
      if (c != '\n') return Status(Code::kMalformed, "http: CR not followed by LF");
      chunk_ = Chunk::kSize;
      chunk_left_ = 0;
      chunk_line_bytes_ = 0;
      return Status::Ok();
    case Chunk::kData:
      return Status(Code::kInternal, "http: chunk data scanned byte by byte");
    default:
      break;
  }
  if (++chunk_line_bytes_ > limits_.max_header_bytes) {
    return Status(Code::kTooLarge, "http: chunk-size line longer than the limit");
  }
  if (chunk_ == Chunk::kSize) return size_byte(c);
  if (chunk_ == Chunk::kSizeLf) {
    if (c != '\n') return Status(Code::kMalformed, "http: CR not followed by LF");
    end_size_line();
    return Status::Ok();
  }
  return extension_byte(c);
}

Status Parser::size_byte(uint8_t c) {
  if (const int digit = hex_value(c); digit >= 0) {
    if (chunk_left_ > (UINT64_MAX >> 4)) return Status(Code::kMalformed, "http: chunk too large");
    chunk_left_ = (chunk_left_ << 4) | static_cast<uint64_t>(digit);
    return Status::Ok();
  }
  const bool has_digits = chunk_line_bytes_ > 1;  // Every byte before this one was a digit.
  if (has_digits && c == '\r') {
    chunk_ = Chunk::kSizeLf;
  } else if (has_digits && c == ';') {
    chunk_ = Chunk::kNameStart;
  } else if (has_digits && is_ows(static_cast<char>(c))) {
    chunk_ = Chunk::kBws;
  } else {
    return Status(Code::kMalformed, "http: invalid chunk size");
  }
  return Status::Ok();
}

// One byte of chunk-ext: dropped, but checked against the grammar.
Status Parser::extension_byte(uint8_t c) {
  const std::optional<Chunk> next = extension_next(c);
  if (!next) return Status(Code::kMalformed, "http: invalid chunk extension");
  chunk_ = *next;
  return Status::Ok();
}

// The state after |c| inside chunk-ext, or nullopt when |c| does not fit the grammar there. A
// CR ends the line wherever a complete extension may end.
std::optional<Parser::Chunk> Parser::extension_next(uint8_t c) const {
  const bool ws = is_ows(static_cast<char>(c));
  const bool tchar = is_tchar(c);
  // What may follow a complete extension (or its value): another one, or the line's end.
  const auto after_element = [c]() -> std::optional<Chunk> {
    if (c == ';') return Chunk::kNameStart;
    if (c == '\r') return Chunk::kSizeLf;
    return std::nullopt;
  };
  // Visible ASCII or obs-text: qdtext (DQUOTE and backslash aside) or a quoted-pair's second byte.
  const bool visible = c >= 0x21 && c != 0x7f;
  switch (chunk_) {
    case Chunk::kBws:  // BWS ";"
      if (ws) return chunk_;
      if (c == ';') return Chunk::kNameStart;
      return std::nullopt;
    case Chunk::kBwsAfterName:  // BWS ( "=" / ";" )
      if (ws) return chunk_;
      if (c == '=') return Chunk::kValueStart;
      if (c == ';') return Chunk::kNameStart;
      return std::nullopt;
    case Chunk::kNameStart:  // BWS chunk-ext-name
      if (ws) return chunk_;
      if (tchar) return Chunk::kName;
      return std::nullopt;
    case Chunk::kName:
      if (tchar) return chunk_;
      if (ws) return Chunk::kBwsAfterName;
      if (c == '=') return Chunk::kValueStart;
      return after_element();
    case Chunk::kValueStart:  // BWS chunk-ext-val
      if (ws) return chunk_;
      if (c == '"') return Chunk::kQuoted;
      if (tchar) return Chunk::kToken;
      return std::nullopt;
    case Chunk::kToken:
      if (tchar) return chunk_;
      [[fallthrough]];
    case Chunk::kQuotedEnd:
      if (ws) return Chunk::kBws;
      return after_element();
    case Chunk::kQuoted:  // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
      if (c == '"') return Chunk::kQuotedEnd;
      if (c == '\\') return Chunk::kQuotedPair;
      if (ws || visible) return chunk_;
      return std::nullopt;
    case Chunk::kQuotedPair:  // quoted-pair = "\\" ( HTAB / SP / VCHAR / obs-text )
      if (ws || visible) return Chunk::kQuoted;
      return std::nullopt;
    default:
      return std::nullopt;
  }
}

void Parser::end_size_line() {
  if (chunk_left_ != 0) {
    chunk_ = Chunk::kData;
    return;
  }
  // The last chunk: a trailer section follows, scanned like a head (RFC 9112 §7.1.2).
  phase_ = Phase::kTrailers;
  start_section(Scan::kLineStart);
}

// ---- llhttp ------------------------------------------------------------------------------

// llhttp_execute over [begin, end), going on past the pause llhttp makes after a CONNECT or
// Upgrade request: Coilgun tunnels neither, so the caller answers the request (CONNECT: 501)
// and, if the connection survives, what follows is parsed as HTTP again. The Upgrade field is
// hop-by-hop and never forwarded, so the server answers as if it had not been asked (RFC 9110
// §7.8: it MAY ignore it). A 101 response never gets here: feed() stops at upgraded_ first.
int Parser::execute(const uint8_t* begin, const uint8_t* end) {
  llhttp_t* ll = &ll_->parser;
  const auto* p = reinterpret_cast<const char*>(begin);
  const auto* stop = reinterpret_cast<const char*>(end);
  llhttp_errno_t err = llhttp_execute(ll, p, static_cast<size_t>(stop - p));
  while (err == HPE_PAUSED_UPGRADE) {
    p = llhttp_get_error_pos(ll);
    llhttp_resume_after_upgrade(ll);
    err = llhttp_execute(ll, p, static_cast<size_t>(stop - p));
  }
  return err;
}

int Parser::on_message_begin() {
  target_.clear();
  reason_.clear();
  fields_.clear();
  trailers_.clear();
  interim_ = false;  // in_value_ was set by start_section().
  return 0;
}

int Parser::on_span(int kind, const char* at, size_t len) {
  // Every byte here was counted against the limits by the scanner before llhttp saw it.
  const std::string_view data(at, len);
  std::vector<Header>& list = phase_ == Phase::kTrailers ? trailers_ : fields_;
  switch (kind) {
    case kUrlSpan:
      target_.append(data);
      break;
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
  // The method is a token: scan_method() saw to it.
  // llhttp 8.1 outside strict mode lets HTAB and bytes 0x80-0xFF through in the target.
  if (!is_valid_target(target_)) return Status(Code::kMalformed, "http: invalid request-target");
  if (const auto absolute = split_absolute_target(target_)) {
    // RFC 9110 §4.2.4: "Before making use of an "http" or "https" URI reference received from
    // an untrusted source, a recipient SHOULD parse for userinfo and treat its presence as an
    // error"; it names nothing a proxy could use, and hides the host from a reader.
    if (absolute->authority.find('@') != std::string_view::npos) {
      return Status(Code::kMalformed, "http: userinfo in the request-target");
    }
    // RFC 9110 §4.2.1: a recipient MUST reject an "http" URI with an empty host as invalid.
    if (!is_valid_host(absolute->authority)) {
      return Status(Code::kMalformed, "http: invalid authority in the request-target");
    }
  }
  return check_host();
}

// RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code to any HTTP/1.1
// request message that lacks a Host header field and to any request message that contains
// more than one Host header field line or a Host header field with an invalid field value."
// HTTP/1.0 requires no Host. An empty value is valid (a target URI without an authority).
Status Parser::check_host() {
  const Header* host = nullptr;
  for (const Header& h : fields_) {
    if (!iequals(h.name, "Host")) continue;
    if (host != nullptr) return Status(Code::kMalformed, "http: more than one Host field");
    host = &h;
  }
  if (host == nullptr) {
    if (ll_->parser.http_minor == 0) return Status::Ok();
    return Status(Code::kMalformed, "http: HTTP/1.1 request without Host");
  }
  if (!host->value.empty() && !is_valid_host(host->value)) {
    return Status(Code::kMalformed, "http: invalid Host");
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

void Parser::deliver_head() {
  llhttp_t* ll = &ll_->parser;
  phase_ = Phase::kBody;
  chunk_ = Chunk::kSize;
  chunk_left_ = 0;
  chunk_line_bytes_ = 0;
  if (mode_ == Mode::kRequest) {
    RequestHead head;
    head.method = std::move(method_);
    head.target = std::move(target_);
    head.version_minor = ll->http_minor;
    head.headers = std::move(fields_);
    head.framing = framing_;
    head.content_length = content_length_;
    handler_.on_request_head(std::move(head));
  } else {
    ResponseHead head;
    head.status = llhttp_get_status_code(ll);
    head.reason = std::move(reason_);
    head.version_minor = ll->http_minor;
    head.headers = std::move(fields_);
    head.framing = framing_;
    head.content_length = content_length_;
    handler_.on_response_head(std::move(head));
  }
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
    Run run{p, end, end};
    if (Status s = next_run(p, end, run); !s.ok()) return fail(s);
    // A message without content completes on an empty run; anywhere else, an empty run means
    // the scanner took every byte.
    const bool must_run = phase_ == Phase::kBody && framing_ != BodyFraming::kChunked;
    if (run.begin == run.end && !must_run) {
      p = run.next;
      break;
    }
    pause_ = Pause::kNone;
    const int err = execute(run.begin, run.end);
    if (err != HPE_OK && err != HPE_PAUSED) {
      if (!cb_error_.ok()) return fail(cb_error_);
      const char* reason = llhttp_get_error_reason(ll);
      return fail(Status(Code::kMalformed, reason != nullptr ? reason : "http: malformed"));
    }
    if (err == HPE_OK) {
      if (scan_ == Scan::kDone && phase_ != Phase::kBody) {
        return fail(Status(Code::kInternal, "http: llhttp did not stop where the section ends"));
      }
      p = run.next;
      if (p == end) break;
      continue;
    }
    // HPE_PAUSED: one of ours.
    p = reinterpret_cast<const uint8_t*>(llhttp_get_error_pos(ll));
    if (pause_ == Pause::kHeadDone) {
      deliver_head();
      llhttp_resume(ll);
      continue;  // Even at the end of the data: a message without a body completes now.
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
    start_section(Scan::kBeforeStart);
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
  if (phase_ == Phase::kHead && scan_ == Scan::kBeforeStart && !cr_) return Status::Ok();
  if (phase_ == Phase::kBody && framing_ == BodyFraming::kUntilClose) {
    // RFC 9112 §6.3: "the message body length is determined by the number of octets
    // received prior to the server closing the connection."
    keep_alive_ = false;
    handler_.on_message_complete();
    return Status::Ok();
  }
  return fail(Status(Code::kClosed, "http: connection closed before the message was complete"));
}

int error_status(const Status& s) {
  switch (s.code()) {
    case Code::kTooLarge:
      return s.message() == kTargetTooLong ? 414 : 431;
    case Code::kUnsupported:
      return 501;
    default:
      return 400;
  }
}

}  // namespace coilgun::http
