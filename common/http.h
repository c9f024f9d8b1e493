#pragma once
// HTTP/1.1 messages without I/O: a streaming parser on llhttp, writers, and the header
// rewriting a proxy needs (RFC 9110, RFC 9112).
//
// The edge parses client requests and writes responses; the origin agent writes requests to
// its backend and parses the responses. Nothing here touches a socket, a clock or a log: bytes
// go in, events and bytes come out, errors come back as Status.
//
// Parsing (class Parser)
//   The caller feeds whatever bytes arrived; the parser reports the head of each message once
//   it is complete and valid, then streams the body as views into the fed bytes (bodies are
//   never buffered), then the trailers, then the end of the message. After each complete
//   message feed() stops, so a server can answer pipelined requests in order: it handles the
//   message, calls resume() and feeds the bytes that were not consumed.
//
//   llhttp (8.1, Debian's build, not compiled in its strict mode) does the tokenising; this
//   class adds what llhttp 8.1 lets through and RFC 9112 does not:
//     * a limit on the head's size and field count (llhttp has none);
//     * obs-fold (a field line starting with SP or HTAB, RFC 9112 §5.2) and whitespace between
//       the start line and the first field line (§2.2) are rejected;
//     * extra spaces in the request line, request-target bytes outside visible ASCII or a '#',
//       versions other than HTTP/1.0 and HTTP/1.1 (incl. HTTP/0.9), status codes outside
//       100..599, control characters in the reason phrase, field names that are not tokens
//       (including "Name :" with a space before the colon);
//     * Transfer-Encoding in an HTTP/1.0 message (§6.1), and any transfer coding other than
//       "chunked" (a proxy that removes the chunked coding cannot carry another one);
//     * an HTTP/1.1 request without exactly one Host field, or any request with two (§3.2);
//     * 1xx, 204 and 304 responses and responses to HEAD never have a body (RFC 9110 §6.4.1),
//       whatever Content-Length says (llhttp 8.1 would wait for one).
//   llhttp itself rejects the rest: Content-Length with Transfer-Encoding, duplicate or
//   invalid Content-Length, a request whose final transfer coding is not chunked, bad chunk
//   sizes, NUL, CR, LF or other controls in field values, bare CR or LF line ends, unknown
//   methods, CR or LF inside a quoted chunk extension. No lenient flag is ever set.
//   Known llhttp 8.1 limitation, failing closed: it refuses (kMalformed) two rare but valid
//   chunk-extension forms, an unquoted value followed by another extension ("1;a=b;c=d") and
//   a quoted-pair inside a quoted value; clients do not send them in practice.
//
// Writing
//   Writers append to a std::vector<uint8_t> the caller owns, the sink type every encoder in
//   Coilgun uses. They write what they are given: framing fields (Content-Length,
//   Transfer-Encoding) are the caller's choice. They refuse, and append nothing, when a
//   name is not a token or a value holds CR, LF, NUL or another control character, so no
//   input can ever inject a line into a message.
//
// Threads: the free functions touch nothing but their arguments and may be called from any
// thread; a Parser belongs to one thread at a time.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "proto/status.h"

namespace coilgun::http {

// One field line. The name keeps the case it was received (or given) with; compare names
// with iequals(). The value has no leading or trailing whitespace when it comes from Parser.
struct Header {
  std::string name;
  std::string value;
};

// The head of a request: request line and header fields.
struct RequestHead {
  std::string method;     // A token, case-sensitive ("GET").
  std::string target;     // The request-target as received: "/a?b", "http://h/a", "h:443", "*".
  int version_minor = 1;  // HTTP/1.<version_minor>: 0 or 1.
  std::vector<Header> headers;

  // True if the connection may carry another request after this one (RFC 9112 §9.3):
  // HTTP/1.1 unless a Connection field lists "close"; HTTP/1.0 only if a Connection field
  // lists "keep-alive" (and none lists "close").
  bool keep_alive() const;
  // True if the client waits for "100 Continue" before sending the body: an HTTP/1.1 request
  // with "Expect: 100-continue" (RFC 9110 §10.1.1; the expectation is ignored in HTTP/1.0).
  bool expects_continue() const;
};

// The head of a response: status line and header fields.
struct ResponseHead {
  int status = 200;    // 100..599.
  std::string reason;  // The reason phrase as received; may be empty.
  int version_minor = 1;
  std::vector<Header> headers;

  // True if this response lets the connection stay open as far as its version and
  // Connection fields go (same rules as RequestHead::keep_alive()). A close-delimited body
  // ends the connection regardless: see Parser::keep_alive().
  bool keep_alive() const;
  // True for 1xx other than 101: an interim response, followed by the final one.
  bool is_interim() const { return status >= 100 && status < 200 && status != 101; }
};

// ASCII case-insensitive equality, for field names and tokens.
bool iequals(std::string_view a, std::string_view b);
// |c| in lower case if it is an ASCII capital; any other byte as it is.
inline char ascii_lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}
// |s| with ASCII letters in lower case (field names, host names, media types).
std::string to_lower(std::string_view s);

// True if |s| is a non-empty token (RFC 9110 §5.6.2): what a field name or method must be.
bool is_token(std::string_view s);

// True if |s| may be sent as a field value: no control characters other than HTAB, no DEL
// (RFC 9110 §5.5; obs-text, bytes 0x80-0xFF, is allowed).
bool is_valid_field_value(std::string_view s);

// True if |s| may be sent as a request-target: non-empty, visible ASCII only (0x21-0x7E), no
// '#' (a fragment is never sent, RFC 9112 §3.2).
bool is_valid_target(std::string_view s);

// The value of the first field named |name| (case-insensitive), or nullopt. The view points
// into |headers| and is valid until that field is changed or destroyed.
std::optional<std::string_view> find(std::span<const Header> headers, std::string_view name);

// True if any field named |name| holds |token| in its comma-separated list, compared
// case-insensitively after trimming whitespace ("Connection: Keep-Alive, Upgrade").
bool has_token(std::span<const Header> headers, std::string_view name, std::string_view token);

// Removes every field named |name|; returns how many were removed. Keeps the others' order.
size_t remove(std::vector<Header>& headers, std::string_view name);

// Replaces every field named |name| with one "name: value" at the end.
void set(std::vector<Header>& headers, std::string_view name, std::string_view value);

// How the body of a message is delimited, decided by its head (RFC 9112 §6.3).
enum class BodyFraming : uint8_t {
  kNone,           // No body: a request without Content-Length or Transfer-Encoding, a
                   // CONNECT, a response to HEAD, a 1xx, 204 or 304 response.
  kContentLength,  // Exactly Parser::content_length() bytes (possibly 0).
  kChunked,        // Transfer-Encoding: chunked.
  kUntilClose,     // A response body that ends when the connection closes (finish()).
};

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
  // on a trailer section. Over either: Code::kTooLarge (the edge answers 431).
  struct Limits {
    size_t max_header_bytes = 64 * 1024;
    size_t max_headers = 128;
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
  //   kTooLarge   a head or trailer section over the limits (edge: 431);
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
  // event. kNone before the first head.
  BodyFraming framing() const { return framing_; }
  // The current message's Content-Length when it carried a valid one (also for a HEAD or 304
  // response, where it describes the body that was not sent); nullopt otherwise.
  std::optional<uint64_t> content_length() const { return content_length_; }
  // Whether the connection may carry another message after the current one: the head's
  // keep_alive() and, for a response, a body that does not run until close. True for an
  // interim response. Valid from the head event on.
  bool keep_alive() const { return keep_alive_; }

  Mode mode() const { return mode_; }
  const Limits& limits() const { return limits_; }

 private:
  struct Llhttp;  // Owns the llhttp_t and routes its callbacks; keeps llhttp.h out of here.

  // Where the parser is within a message.
  enum class Phase : uint8_t { kHead, kBody, kTrailers };
  // Why llhttp paused.
  enum class Pause : uint8_t { kNone, kHeadDone, kLastChunk, kMessageDone };
  // The byte scanner's position within a head or trailer section.
  enum class Scan : uint8_t { kBeforeStart, kStartLine, kLineStart, kInLine };

  Status scan(const uint8_t* begin, const uint8_t* end);
  Status fail(Status s);
  Status count_bytes(size_t n);

  // llhttp callbacks (via Llhttp); each returns 0, HPE_PAUSED or HPE_USER with error_ set.
  int on_message_begin();
  int on_span(int kind, const char* at, size_t len);
  int on_headers_complete();
  int on_chunk_header();
  int on_body_bytes(const char* at, size_t len);
  int on_message_done();
  int user_error(Status s);

  Status check_request_head();
  Status check_response_head();
  Status check_framing(bool has_body);
  Status finish_fields(std::vector<Header>& fields);

  Mode mode_;
  Handler& handler_;
  Limits limits_;
  std::unique_ptr<Llhttp> ll_;

  Status error_;     // Sticky: once set, every call returns it.
  Status cb_error_;  // Set by a callback that stopped llhttp (HPE_USER).
  Pause pause_ = Pause::kNone;
  Phase phase_ = Phase::kHead;
  Scan scan_ = Scan::kBeforeStart;
  size_t section_bytes_ = 0;       // Bytes of the current head or trailer section, scanned.
  size_t section_span_bytes_ = 0;  // Bytes llhttp reported in spans for that section.
  size_t start_line_spaces_ = 0;
  bool paused_ = false;
  bool finished_ = false;
  bool closed_ = false;    // The last message ended the connection.
  bool upgraded_ = false;  // A 101 response ended HTTP on this connection.
  bool request_was_head_ = false;
  bool in_value_ = false;  // The last field-section span was a value (next name starts a field).

  // The message being parsed.
  std::string method_;
  std::string target_;
  std::string reason_;
  std::vector<Header> fields_;
  std::vector<Header> trailers_;
  bool interim_ = false;
  BodyFraming framing_ = BodyFraming::kNone;
  std::optional<uint64_t> content_length_;
  bool keep_alive_ = true;
};

// Appends "METHOD target HTTP/1.x\r\n", the fields and the empty line to |out|. Refuses with
// kMalformed, appending nothing, a method or field name that is not a token, a target that
// is_valid_target() rejects, a value that is_valid_field_value() rejects, or a version other
// than 1.0 / 1.1.
Status write_request_head(const RequestHead& head, std::vector<uint8_t>& out);

// Appends "HTTP/1.x status reason\r\n", the fields and the empty line to |out|. An empty
// reason is replaced by status_reason(status). Refuses with kMalformed, appending nothing, a
// status outside 100..599, a reason with control characters, or invalid fields as above.
Status write_response_head(const ResponseHead& head, std::vector<uint8_t>& out);

// Appends one chunk holding |data| ("<hex size>\r\n<data>\r\n"). Appends nothing for empty
// |data|: a zero-size chunk would end the body (use write_last_chunk()).
void write_chunk(std::span<const uint8_t> data, std::vector<uint8_t>& out);

// Appends only a chunk's size line ("<hex size>\r\n") for |size| > 0, so the caller can send
// the body bytes from where they already are, followed by kCrlf. Appends nothing for 0.
void write_chunk_header(uint64_t size, std::vector<uint8_t>& out);

// Appends the last chunk, |trailers| and the final empty line ("0\r\n[trailers]\r\n").
// Refuses invalid trailer fields with kMalformed, appending nothing.
Status write_last_chunk(std::span<const Header> trailers, std::vector<uint8_t>& out);

inline constexpr std::string_view kCrlf = "\r\n";

// Removes the fields that describe one connection rather than the message, as a proxy must
// before forwarding (RFC 9110 §7.6.1): Connection, Keep-Alive, Proxy-Connection, TE, Trailer,
// Transfer-Encoding, Upgrade, and every field named in a Connection field's list. Host and
// Content-Length are never removed on a Connection field's say-so (a client must not be able
// to strip the fields that route and frame the message); the caller frames the forwarded
// body itself.
void remove_hop_by_hop(std::vector<Header>& headers);

// Records this proxy in Via (RFC 9110 §7.6.3): appends ", <received_by>" to the last Via
// field, or adds "Via: <received_by>". Example: add_via(h, "1.1 coilgun").
void add_via(std::vector<Header>& headers, std::string_view received_by);

// Appends |client_ip| to the last X-Forwarded-For field (", " separated), or adds one.
void add_forwarded_for(std::vector<Header>& headers, std::string_view client_ip);

// The standard reason phrase for |status| ("Not Found"); "" for a code without one.
std::string_view status_reason(int status);

}  // namespace coilgun::http
