#include "common/http/message.h"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>

namespace coilgun::http {

namespace {

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

}  // namespace

bool is_tchar(unsigned char c) {
  // tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|"
  //         / "~" / DIGIT / ALPHA  (RFC 9110 §5.6.2)
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  return std::strchr("!#$%&'*+-.^_`|~", c) != nullptr && c != '\0';
}

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && is_ows(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_ows(s.back())) s.remove_suffix(1);
  return s;
}
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

namespace {

// port = *DIGIT (RFC 3986 §3.2.3), at most 65535 (a TCP port).
bool is_valid_port(std::string_view port) {
  uint32_t n = 0;
  for (char c : port) {
    if (c < '0' || c > '9') return false;
    n = n * 10 + static_cast<uint32_t>(c - '0');
    if (n > 65535) return false;
  }
  return true;
}

// reg-name = *( unreserved / pct-encoded / sub-delims ) (RFC 3986 §3.2.2), non-empty, without
// ','. An IPv4 address is a reg-name as far as its characters go.
bool is_valid_reg_name(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const auto c = static_cast<unsigned char>(name[i]);
    if (c == '%') {
      if (i + 2 >= name.size() || hex_value(static_cast<uint8_t>(name[i + 1])) < 0 ||
          hex_value(static_cast<uint8_t>(name[i + 2])) < 0) {
        return false;
      }
      i += 2;
      continue;
    }
    const bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    const bool unreserved = alnum || std::strchr("-._~", c) != nullptr;
    const bool sub_delim = std::strchr("!$&'()*+;=", c) != nullptr;  // ',' left out.
    if (c == '\0' || !(unreserved || sub_delim)) return false;
  }
  return true;
}

// IP-literal = "[" IPv6address "]" (IPvFuture and zone identifiers are refused).
bool is_valid_ip_literal(std::string_view literal) {
  if (literal.size() < 2 || literal.front() != '[' || literal.back() != ']') return false;
  return is_ipv6_address(literal.substr(1, literal.size() - 2));
}

// True when inet_pton() of |family| reads all of |s| (parsing only: no socket is involved).
bool parses_as(int family, std::string_view s) {
  char text[INET6_ADDRSTRLEN] = {};
  if (s.empty() || s.size() >= sizeof(text)) return false;
  s.copy(text, s.size());
  in6_addr address;  // Large enough for either family.
  return inet_pton(family, text, &address) == 1;
}

}  // namespace

bool is_ipv4_address(std::string_view s) { return parses_as(AF_INET, s); }

bool is_ipv6_address(std::string_view s) { return parses_as(AF_INET6, s); }

std::optional<uint64_t> parse_content_length(std::string_view value) {
  uint64_t n = 0;
  if (value.empty()) return std::nullopt;
  const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
  // A sign or a blank is refused by the first-digit check.
  if (ec != std::errc() || end != value.data() + value.size() || value[0] < '0' || value[0] > '9') {
    return std::nullopt;
  }
  return n;
}

bool is_valid_host(std::string_view s) {
  // Host = uri-host [ ":" port ]; uri-host = IP-literal / IPv4address / reg-name.
  size_t host_end = s.find(':');
  if (!s.empty() && s[0] == '[') {
    const size_t close = s.find(']');
    if (close == std::string_view::npos) return false;
    host_end = close + 1;
    if (host_end < s.size() && s[host_end] != ':') return false;
    if (!is_valid_ip_literal(s.substr(0, host_end))) return false;
  } else if (!is_valid_reg_name(s.substr(0, host_end))) {
    return false;
  }
  return host_end >= s.size() || is_valid_port(s.substr(host_end + 1));
}

std::optional<AbsoluteTarget> split_absolute_target(std::string_view target) {
  size_t start = 0;
  for (std::string_view scheme : {"http://", "https://"}) {
    if (target.size() >= scheme.size() && iequals(target.substr(0, scheme.size()), scheme)) {
      start = scheme.size();
    }
  }
  if (start == 0) return std::nullopt;
  // The authority ends at the first "/", "?" or "#" (RFC 3986 §3.2); a target holds no "#".
  const size_t end = std::min(target.find_first_of("/?", start), target.size());
  AbsoluteTarget out;
  out.authority = target.substr(start, end - start);
  const std::string_view rest = target.substr(end);
  if (!rest.starts_with('/')) out.origin_form.push_back('/');
  out.origin_form.append(rest);
  return out;
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

bool upgrade_answers(std::string_view asked, std::string_view answered) {
  bool any = false;
  const bool unasked = any_list_element(answered, [&](std::string_view protocol) {
    any = true;
    return !any_list_element(asked, [&](std::string_view a) { return iequals(a, protocol); });
  });
  return any && !unasked;
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
