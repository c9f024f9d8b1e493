#pragma once
// HTTP/1.1 messages without I/O (RFC 9110, RFC 9112): the heads of requests and responses, the
// checks on the tokens, field values, targets and hosts they hold, and the header rewriting a
// proxy needs. The streaming parser is in parser.h, the writers in writer.h.
//
// The edge parses client requests and writes responses; the origin agent writes requests to
// its backend and parses the responses. Nothing here touches a socket, a clock or a log: bytes
// go in, events and bytes come out, errors come back as Status.
//
// Threads: the free functions touch nothing but their arguments and may be called from any
// thread.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace coilgun::http {

// One field line. The name keeps the case it was received (or given) with; compare names
// with iequals(). The value has no leading or trailing whitespace when it comes from Parser.
struct Header {
  std::string name;
  std::string value;
};

// How the body of a message is delimited, decided by its head (RFC 9112 §6.3).
enum class BodyFraming : uint8_t {
  kNone,           // No body: a request without Content-Length or Transfer-Encoding, a
                   // CONNECT, a response to HEAD, a 1xx, 204 or 304 response.
  kContentLength,  // Exactly content_length bytes (possibly 0).
  kChunked,        // Transfer-Encoding: chunked.
  kUntilClose,     // A response body that ends when the connection closes (finish()).
};

// The head of a request: request line and header fields.
struct RequestHead {
  std::string method;     // A token, case-sensitive ("GET").
  std::string target;     // The request-target as received: "/a?b", "http://h/a", "h:443", "*".
  int version_minor = 1;  // HTTP/1.<version_minor>: 0 or 1.
  std::vector<Header> headers;
  // How the body that follows this head is delimited, and the head's Content-Length when it
  // carried a valid one (nullopt otherwise, and with chunked framing). Filled in by Parser
  // from what llhttp parsed (the same values as Parser::framing() and
  // Parser::content_length() at the head event), so that no caller parses Content-Length
  // again. The writers ignore both: the framing fields they write are the caller's.
  BodyFraming framing = BodyFraming::kNone;
  std::optional<uint64_t> content_length = std::nullopt;

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
  // As in RequestHead, filled in by Parser (Mode::kResponse). A response that has no body
  // (to HEAD; 1xx, 204, 304: RFC 9110 §6.4.1) is kNone, and content_length still holds the
  // Content-Length it carried: for HEAD or 304, the length of the body that was not sent. A
  // response with neither Content-Length nor chunked framing is kUntilClose.
  BodyFraming framing = BodyFraming::kNone;
  std::optional<uint64_t> content_length = std::nullopt;

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

// True if |s| is uri-host [ ":" port ] (RFC 9112 §3.2, RFC 3986 §3.2.2): a bracketed IPv6
// literal ("[::1]"), or a non-empty reg-name or IPv4 address made of unreserved characters,
// pct-encodings and sub-delims, followed by an optional port of at most 65535. Stricter than
// RFC 3986 in two ways: a ',' is refused (Host is a singleton field, and "a.com, b.com" is two
// hosts to anyone who reads it as a list), and so is an IPvFuture literal or an IPv6 zone.
// An empty Host field value is valid (§3.2) but is not a host: callers check for it apart.
bool is_valid_host(std::string_view s);

// True when |s| is, in full, a dotted-quad IPv4 address ("10.0.0.1"); an IPv6 address
// without brackets ("::1"; no zone).
bool is_ipv4_address(std::string_view s);
bool is_ipv6_address(std::string_view s);

// A Content-Length field value (RFC 9110 §8.6: 1*DIGIT) as a number; nullopt when it is
// empty, holds anything but digits, or does not fit in 64 bits. For lengths that arrive as
// text outside the Parser (the tunnel's header blocks): the Parser's heads carry theirs.
std::optional<uint64_t> parse_content_length(std::string_view value);

// An absolute-form request-target with the "http" or "https" scheme (RFC 9112 §3.2.2), split.
struct AbsoluteTarget {
  std::string_view authority;  // "a.com:8080"; points into the target given.
  std::string origin_form;     // "/p?q"; "/" when the path is empty ("http://a.com?q": "/?q").
};
// Splits |target| when it starts with "http://" or "https://" (the scheme compared without
// case); nullopt for any other form (origin-form, asterisk-form, authority-form, other
// schemes). The authority is not checked: see is_valid_host(), and refuse a '@' (userinfo).
std::optional<AbsoluteTarget> split_absolute_target(std::string_view target);

// The value of the first field named |name| (case-insensitive), or nullopt. The view points
// into |headers| and is valid until that field is changed or destroyed.
std::optional<std::string_view> find(std::span<const Header> headers, std::string_view name);

// True if any field named |name| holds |token| in its comma-separated list, compared
// case-insensitively after trimming whitespace ("Connection: Keep-Alive, Upgrade").
bool has_token(std::span<const Header> headers, std::string_view name, std::string_view token);

// True if |answered|, the Upgrade field of a 101, names only protocols that |asked|, the
// request's Upgrade field, listed (RFC 9110 §7.8: a server "MUST NOT switch to a protocol that
// was not indicated by the client"); names compare case-insensitively. False for an empty one.
bool upgrade_answers(std::string_view asked, std::string_view answered);

// Removes every field named |name|; returns how many were removed. Keeps the others' order.
size_t remove(std::vector<Header>& headers, std::string_view name);

// Replaces every field named |name| with one "name: value" at the end.
void set(std::vector<Header>& headers, std::string_view name, std::string_view value);

// True if |c| is a tchar (RFC 9110 §5.6.2): the bytes a token is made of.
bool is_tchar(unsigned char c);

// True for OWS bytes, SP and HTAB (RFC 9110 §5.6.3).
inline bool is_ows(char c) { return c == ' ' || c == '\t'; }

// |s| without leading and trailing OWS.
std::string_view trim_ows(std::string_view s);

// Calls f(element) for each non-empty element of a comma-separated list, trimmed of OWS
// (RFC 9110 §5.6.1: empty elements are ignored). Stops early, returning true, when f returns
// true; returns false when it never did. The views point into |list|.
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

// The value of a hex digit (either case), or -1.
inline int hex_value(uint8_t c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Removes the fields that describe one connection rather than the message, as a proxy must
// before forwarding (RFC 9110 §7.6.1): Connection, Keep-Alive, Proxy-Connection, TE, Trailer,
// Transfer-Encoding, Upgrade, and every field named in a Connection field's list. Host and
// Content-Length are never removed on a Connection field's say-so (a client must not be able
// to strip the fields that route and frame the message); the caller frames the forwarded
// body itself.
void remove_hop_by_hop(std::vector<Header>& headers);

// True for the safe methods of RFC 9110 §9.2.1: GET, HEAD, OPTIONS, TRACE (case-sensitive).
inline bool is_safe_method(std::string_view m) {
  return m == "GET" || m == "HEAD" || m == "OPTIONS" || m == "TRACE";
}

// Records this proxy in Via (RFC 9110 §7.6.3): appends ", <received_by>" to the last Via
// field, or adds "Via: <received_by>". Example: add_via(h, "1.1 coilgun").
void add_via(std::vector<Header>& headers, std::string_view received_by);

// Appends |client_ip| to the last X-Forwarded-For field (", " separated), or adds one.
void add_forwarded_for(std::vector<Header>& headers, std::string_view client_ip);

// The standard reason phrase for |status| ("Not Found"); "" for a code without one.
std::string_view status_reason(int status);

}  // namespace coilgun::http
