#pragma once
// The streaming HTTP/1.1 parser (RFC 9112), on llhttp behind a strict byte scanner of our own.
// No I/O: bytes go in, events come out, errors come back as Status.
//
// Parsing (class Parser)
//   The caller feeds whatever bytes arrived; the parser reports the head of each message once
//   it is complete and valid, then streams the body as views into the fed bytes (bodies are
//   never buffered), then the trailers, then the end of the message. After each complete
//   message feed() stops, so a server can answer pipelined requests in order: it handles the
//   message, calls resume() and feeds the bytes that were not consumed.
//
//   llhttp (8.1, Debian's build, not compiled in its strict mode) does the tokenising. It has no
//   lenient flag that makes it stricter, so a byte scanner of ours reads every head, trailer
//   section and chunk-size line first, and llhttp only ever sees bytes the scanner let through.
//   Strict where RFC 9112 says so:
//     * a CR that is not followed by LF, anywhere in a head, a trailer section or a chunk-size
//       line, is an error, never a line end (llhttp 8.1 takes "CR LF CR x" as the end of a head:
//       the class of Node.js CVE-2025-23167); so is an LF without its CR;
//     * obs-fold (a field line starting with SP or HTAB, RFC 9112 §5.2) and whitespace between
//       the start line and the first field line (§2.2) are rejected;
//     * extra spaces in the request line, request-target bytes outside visible ASCII or a '#',
//       versions other than HTTP/1.0 and HTTP/1.1 (incl. HTTP/0.9), status codes outside
//       100..599, control characters in the reason phrase, field names that are not tokens
//       (including "Name :" with a space before the colon);
//     * Transfer-Encoding in an HTTP/1.0 message (§6.1), and any transfer coding other than
//       "chunked" (a proxy that removes the chunked coding cannot carry another one);
//     * an HTTP/1.1 request without a Host field, any request with two, and a Host that is
//       not uri-host [":" port] (§3.2; see is_valid_host()); an absolute-form target whose
//       authority is invalid or carries userinfo ("http://user@host/", RFC 9110 §4.2.4);
//     * a chunk-size line that does not follow the chunk-ext grammar (RFC 9112 §7.1.1);
//     * 1xx, 204 and 304 responses and responses to HEAD never have a body (RFC 9110 §6.4.1),
//       whatever Content-Length says (llhttp 8.1 would wait for one).
//   llhttp itself rejects the rest: Content-Length with Transfer-Encoding, duplicate or
//   invalid Content-Length, a request whose final transfer coding is not chunked, NUL, CR, LF
//   or other controls in field values. No lenient flag is ever set.
//   Lenient where it says so:
//     * a method is any token, case-sensitive (RFC 9110 §9.1): QUERY, PROPFIND, "FOO-BAR" are
//       delivered as received. llhttp 8.1 only knows a fixed list, so it is given a stand-in
//       with the same framing (see Parser::feed_method());
//     * chunk extensions, quoted-pairs and all, are accepted and dropped (§7.1.1: a recipient
//       ignores the ones it does not understand): llhttp never sees them, and they are not
//       reported, so a proxy never forwards them;
//     * empty lines (CRLF) before a start line are skipped (§2.2);
//     * an HTTP/1.0 request needs no Host (§3.2 asks it of HTTP/1.1 only).
//   Limits: a head's (or trailer section's) size and field count, and a chunk-size line's
//   length, are checked before anything is stored. A request-target that alone takes the head
//   over its size limit is reported apart (error_status() gives 414 for it, 431 otherwise).
//
// Threads: a Parser belongs to one thread at a time; error_status() may be called from any.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/http/message.h"
#include "proto/status.h"

namespace coilgun::http {

// Streaming HTTP/1.1 parser for one connection, one direction: either requests (the edge's
// client connections) or responses (the agent's backend connections).
//
// Usage, for each batch of bytes read:
//
//   std::span<const uint8_t> rest = bytes;
//   while (!rest.empty()) {
//     auto n = parser.feed(rest);
//     if (!n.ok()) { answer per n.status().code(); close; }
//     rest = rest.subspan(*n);
//     if (parser.paused()) { finish handling that message; parser.resume(); }
//   }
//   ... and parser.finish() when the peer closes its side.
//
// Not thread-safe; not copyable or movable (llhttp points back at it). No I/O.
class Parser {
 public:
  enum class Mode : uint8_t { kRequest, kResponse };

  // Limits on a head (start line plus field section, through its final CRLF) and, separately,
  // on a trailer section; max_header_bytes also bounds each chunk-size line (extensions
  // included). Over any: Code::kTooLarge (error_status(): 414 when the request-target alone
  // took the head over max_header_bytes, else 431).
  struct Limits {
    size_t max_header_bytes = 64 * 1024;
    size_t max_headers = 128;  // Field lines in a head, or in a trailer section.
  };

  // Receives a parser's events, always in this order for each message: one head, any number
  // of on_body calls, at most one on_trailers, one on_message_complete. The handler runs on
  // the caller's thread, inside feed() or finish(); it may call the parser's const accessors
  // but must not call feed(), finish() or resume(), nor destroy the parser.
  class Handler {
   public:
    virtual ~Handler() = default;
    // A request head (Mode::kRequest), complete and valid. Owned by the handler from here.
    virtual void on_request_head(RequestHead&& /*head*/) {}
    // A response head (Mode::kResponse). An interim response (head.is_interim()) is a whole
    // message: on_message_complete follows at once, then the next response is parsed.
    virtual void on_response_head(ResponseHead&& /*head*/) {}
    // Body bytes, de-chunked, never empty. The view points into the buffer given to feed()
    // and is valid only during this call.
    virtual void on_body(std::span<const uint8_t> data) = 0;
    // The trailer fields of a chunked message, if it had any (validated as header fields).
    virtual void on_trailers(std::vector<Header>&& /*trailers*/) {}
    // The message is complete; feed() returns right after this (paused()).
    virtual void on_message_complete() = 0;
  };

  // |handler| must outlive the parser.
  Parser(Mode mode, Handler& handler, Limits limits);
  Parser(Mode mode, Handler& handler) : Parser(mode, handler, Limits{}) {}
  ~Parser();
  Parser(const Parser&) = delete;
  Parser& operator=(const Parser&) = delete;

  // Parses bytes from |data|, delivering events to the handler, and returns how many it
  // consumed: all of them, or fewer when a message completed (paused() is then true; the
  // rest belongs to the next message and must be fed again after resume()). Nothing is kept
  // from |data| after the call returns. Errors, after which every call fails the same way:
  //   kTooLarge   a head, trailer section or chunk-size line over the limits (edge: 431, or
  //               414 for a request-target: see error_status());
  //   kMalformed  anything that is not valid HTTP/1.1 framing or syntax (edge: 400);
  //   kUnsupported a transfer coding other than chunked (edge: 501), or bytes after a
  //               101 Switching Protocols response (the connection is no longer HTTP);
  //   kClosed     bytes after a message that closes the connection (!keep_alive()), or
  //               feed() after finish();
  //   kInternal   feed() while paused() (call resume() first).
  Result<size_t> feed(std::span<const uint8_t> data);

  // True after a message completed, until resume().
  bool paused() const { return paused_; }
  // Lets the next feed() parse the next message. Does nothing unless paused().
  void resume();

  // Reports that the peer closed its side: ends a close-delimited response body (delivering
  // on_message_complete) and checks no message was cut short. Ok between messages (or while
  // paused); kClosed if a message had begun and is incomplete; the parse error if feed()
  // failed. Afterwards feed() fails with kClosed.
  Status finish();

  // For Mode::kResponse: whether the request that the next response answers was HEAD (its
  // response has no body whatever its fields say). Applies to every response head parsed
  // from now on, until changed; set it before feeding each response.
  void set_request_was_head(bool was_head) { request_was_head_ = was_head; }

  // The framing of the current message, from its head event until the next message's head
  // event. kNone before the first head. The head delivered carries the same (head.framing).
  BodyFraming framing() const { return framing_; }
  // The current message's Content-Length when it carried a valid one (also for a HEAD or 304
  // response, where it describes the body that was not sent); nullopt otherwise. The head
  // delivered carries the same (head.content_length).
  std::optional<uint64_t> content_length() const { return content_length_; }
  // Whether the connection may carry another message after the current one: the head's
  // keep_alive() and, for a response, a body that does not run until close. True for an
  // interim response. Valid from the head event on.
  bool keep_alive() const { return keep_alive_; }

  // For Mode::kResponse: a 101 response completed, and the connection is no longer HTTP (what
  // follows belongs to the new protocol; feed() refuses it).
  bool upgraded() const { return upgraded_; }

  Mode mode() const { return mode_; }
  const Limits& limits() const { return limits_; }

 private:
  struct Llhttp;  // Owns the llhttp_t and routes its callbacks; keeps llhttp.h out of here.

  // Where the parser is within a message.
  enum class Phase : uint8_t { kHead, kBody, kTrailers };
  // Why llhttp paused.
  enum class Pause : uint8_t { kNone, kHeadDone, kMessageDone };
  // The byte scanner's position within a head or trailer section. Bytes before the start line
  // and a request's method are the scanner's own: llhttp never sees them.
  enum class Scan : uint8_t { kBeforeStart, kMethod, kStartLine, kLineStart, kInLine, kDone };
  // The chunked-body scanner's position. From kBws on it is inside chunk extensions, whose
  // bytes llhttp never sees.
  enum class Chunk : uint8_t {
    kSize,          // 1*HEXDIG.
    kSizeLf,        // The line's CR was seen.
    kData,          // chunk_left_ bytes of data to come.
    kDataCr,        // The CR after the data.
    kDataLf,        // The LF after it.
    kBws,           // BWS after the size or a value: more of it, or ';'.
    kBwsAfterName,  // BWS after an extension name: more of it, '=' or ';'.
    kNameStart,     // After ';': BWS, then a token.
    kName,          // In chunk-ext-name.
    kValueStart,    // After '=': BWS, then a token or a quoted-string.
    kToken,         // In a token value.
    kQuoted,        // In a quoted-string value.
    kQuotedPair,    // After a backslash inside it.
    kQuotedEnd,     // After its closing DQUOTE.
  };
  // The next bytes llhttp is to parse, [begin, end), and where scanning goes on once it has
  // parsed them all (after a dropped byte, |next| is past |end|).
  struct Run {
    const uint8_t* begin;
    const uint8_t* end;
    const uint8_t* next;
  };

  Status next_run(const uint8_t* p, const uint8_t* end, Run& run);
  Status scan_section(const uint8_t* p, const uint8_t* end, Run& run);
  Status scan_chunked(const uint8_t* p, const uint8_t* end, Run& run);
  bool scanner_owns() const { return scan_ == Scan::kBeforeStart || scan_ == Scan::kMethod; }
  void start_section(Scan at);
  Status scan_byte(uint8_t c);
  Status scan_before_start(uint8_t c);
  Status scan_method(uint8_t c);
  Status end_line();
  Status head_too_large(uint8_t c) const;
  Status chunk_byte(uint8_t c);
  Status size_byte(uint8_t c);
  Status extension_byte(uint8_t c);
  std::optional<Chunk> extension_next(uint8_t c) const;
  void end_size_line();
  Status feed_method();
  int execute(const uint8_t* begin, const uint8_t* end);
  Status fail(Status s);

  // llhttp callbacks (via Llhttp); each returns 0, HPE_PAUSED or HPE_USER with error_ set.
  int on_message_begin();
  int on_span(int kind, const char* at, size_t len);
  int on_headers_complete();
  int on_body_bytes(const char* at, size_t len);
  int on_message_done();
  int user_error(Status s);

  Status check_request_head();
  Status check_host();
  Status check_response_head();
  Status check_framing(bool has_body);
  Status finish_fields(std::vector<Header>& fields);
  void deliver_head();

  Mode mode_;
  Handler& handler_;
  Limits limits_;
  std::unique_ptr<Llhttp> ll_;

  Status error_;     // Sticky: once set, every call returns it.
  Status cb_error_;  // Set by a callback that stopped llhttp (HPE_USER).
  Pause pause_ = Pause::kNone;
  Phase phase_ = Phase::kHead;
  Scan scan_ = Scan::kBeforeStart;
  bool cr_ = false;           // The last byte scanned in a head was a CR (an LF must follow).
  size_t section_bytes_ = 0;  // Bytes of the current head or trailer section, scanned.
  size_t blank_bytes_ = 0;    // Empty lines (CRLF) before the current start line.
  size_t start_line_spaces_ = 0;
  Chunk chunk_ = Chunk::kSize;
  uint64_t chunk_left_ = 0;      // The chunk size being read, then the data bytes still to come.
  size_t chunk_line_bytes_ = 0;  // Bytes of the current chunk-size line, scanned.
  bool paused_ = false;
  bool finished_ = false;
  bool closed_ = false;    // The last message ended the connection.
  bool upgraded_ = false;  // A 101 response ended HTTP on this connection.
  bool request_was_head_ = false;
  bool in_value_ = false;  // The last field-section span was a value (next name starts a field).

  // The message being parsed.
  std::string method_;  // Read by the scanner (llhttp sees a stand-in).
  std::string target_;
  std::string reason_;
  std::vector<Header> fields_;
  std::vector<Header> trailers_;
  bool interim_ = false;
  BodyFraming framing_ = BodyFraming::kNone;
  std::optional<uint64_t> content_length_;
  bool keep_alive_ = true;
};

// The status a server answers a Parser error with (RFC 9112, RFC 9110 §15.5): 414 URI Too Long
// for a request-target that alone took the head over Limits::max_header_bytes, 431 for any
// other kTooLarge, 501 for kUnsupported, 400 for everything else (kClosed needs no answer).
int error_status(const Status& s);

}  // namespace coilgun::http
