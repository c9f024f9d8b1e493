#include "common/daemon/config.h"

#include <arpa/inet.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <set>
#include <sstream>
#include <toml.hpp>

#include "common/http/message.h"

namespace coilgun::config {
namespace {

// ---------------------------------------------------------------------------------------------
// Small text helpers

std::string_view trim(std::string_view s) {
  while (!s.empty() &&
         (s.front() == ' ' || s.front() == '\t' || s.front() == '\n' || s.front() == '\r')) {
    s.remove_prefix(1);
  }
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\n' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

using http::ascii_lower;
using http::iequals;
using http::to_lower;

char upper(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c; }

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// `"text"` with TOML basic-string escapes, for messages and for to_toml().
std::string quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  out += '"';
  return out;
}

// Parses a run of decimal digits (the whole of |s|) into |out|; false when empty, not digits or
// above |max|.
bool parse_uint(std::string_view s, uint64_t max, uint64_t& out) {
  if (s.empty()) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (!is_digit(c)) return false;
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (max - d) / 10) return false;
    v = v * 10 + d;
  }
  out = v;
  return true;
}

// Splits a leading run of digits off |s|.
std::pair<std::string_view, std::string_view> split_number(std::string_view s) {
  size_t i = 0;
  while (i < s.size() && is_digit(s[i])) ++i;
  return {s.substr(0, i), s.substr(i)};
}

// Levenshtein distance, for "did you mean" hints.
size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0u : 1u)});
      diag = up;
    }
  }
  return row[b.size()];
}

// ` (did you mean "x"?)` for the closest candidate within a small distance, else "".
std::string suggestion(std::string_view wrong, const std::vector<std::string>& candidates) {
  size_t best = std::max<size_t>(2, wrong.size() / 4) + 1;
  const std::string* pick = nullptr;
  for (const std::string& c : candidates) {
    const size_t d = edit_distance(wrong, c);
    if (d < best) {
      best = d;
      pick = &c;
    }
  }
  return pick ? " (did you mean " + quote(*pick) + "?)" : "";
}

// ---------------------------------------------------------------------------------------------
// Host names and addresses

bool is_ipv4_literal(std::string_view s) {
  if (s.empty() || s.size() > 15) return false;
  char buf[16];
  std::memcpy(buf, s.data(), s.size());
  buf[s.size()] = '\0';
  in_addr a;
  return inet_pton(AF_INET, buf, &a) == 1;
}

bool is_ipv6_literal(std::string_view s) {
  if (s.empty() || s.size() > 45) return false;
  char buf[46];
  std::memcpy(buf, s.data(), s.size());
  buf[s.size()] = '\0';
  in6_addr a;
  return inet_pton(AF_INET6, buf, &a) == 1;
}

bool looks_numeric(std::string_view s) {
  return !s.empty() &&
         std::all_of(s.begin(), s.end(), [](char c) { return is_digit(c) || c == '.'; });
}

// "" when |name| is a valid DNS name (letters, digits, '-', '_', dot-separated labels of 1..63
// characters, at most 253 in all), else why not. Case is not checked.
std::string dns_name_problem(std::string_view name) {
  if (name.empty()) return "empty host name";
  if (name.size() > 253) return "host name longer than 253 characters";
  size_t label = 0;
  for (size_t i = 0; i <= name.size(); ++i) {
    if (i == name.size() || name[i] == '.') {
      if (label == 0) return "empty label in host name " + quote(name);
      if (label > 63) return "label longer than 63 characters in host name " + quote(name);
      if (name[i - 1] == '-' || name[i - label] == '-') {
        return "label starts or ends with '-' in host name " + quote(name);
      }
      label = 0;
      continue;
    }
    const char c = name[i];
    const bool ok =
        is_digit(c) || (ascii_lower(c) >= 'a' && ascii_lower(c) <= 'z') || c == '-' || c == '_';
    if (!ok)
      return "invalid character " + quote(std::string(1, c)) + " in host name " + quote(name);
    ++label;
  }
  return "";
}

// Checks and normalises a host (no port): IPv4, bare IPv6 or DNS name (lower-cased).
ConfigResult<std::string> parse_host(std::string_view host, bool allow_bare_ipv6) {
  if (host.empty()) return ConfigError{"empty host"};
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
    if (!is_ipv6_literal(host)) return ConfigError{"invalid IPv6 address " + quote(host)};
    return to_lower(host);
  }
  if (host.find(':') != std::string_view::npos) {
    if (allow_bare_ipv6 && is_ipv6_literal(host)) return to_lower(host);
    return ConfigError{"invalid host " + quote(host)};
  }
  if (looks_numeric(host)) {
    if (!is_ipv4_literal(host)) return ConfigError{"invalid IPv4 address " + quote(host)};
    return std::string(host);
  }
  if (host.back() == '.') host.remove_suffix(1);  // A fully qualified name's root dot.
  if (std::string problem = dns_name_problem(host); !problem.empty()) {
    return ConfigError{problem};
  }
  return to_lower(host);
}

// "" when |pattern| is a valid, lower-cased route host pattern.
std::string host_pattern_problem(const std::string& pattern) {
  if (pattern.empty()) return "empty host pattern";
  if (pattern == "*") {
    return "host pattern \"*\" is not allowed; set the top-level agent for a default route";
  }
  std::string_view name = pattern;
  if (name.starts_with("*.")) {
    name.remove_prefix(2);
  } else if (name.find('*') != std::string_view::npos) {
    return "host pattern " + quote(pattern) +
           ": a wildcard must be a whole leading label, as in \"*.example.com\"";
  }
  if (is_ipv4_literal(name) || is_ipv6_literal(name)) {
    if (name.size() != pattern.size()) {
      return "host pattern " + quote(pattern) + ": an IP address cannot have a wildcard";
    }
    return "";
  }
  if (name.find(':') != std::string_view::npos) {
    return "host pattern " + quote(pattern) + " has a port; ports are ignored when matching";
  }
  if (std::string problem = dns_name_problem(name); !problem.empty()) {
    return "host pattern " + quote(pattern) + ": " + problem;
  }
  return "";
}

std::string join_lines(const std::vector<std::string>& lines) {
  std::string out;
  for (const std::string& l : lines) {
    if (!out.empty()) out += '\n';
    out += l;
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Value types

bool HostPort::is_ipv6() const { return host.find(':') != std::string::npos; }

std::string HostPort::to_string() const {
  std::string h = is_ipv6() ? "[" + host + "]" : host;
  return h + ":" + std::to_string(port);
}

ConfigResult<HostPort> parse_host_port(std::string_view text) {
  const std::string_view t = trim(text);
  if (t.empty()) return ConfigError{"empty address; expected HOST:PORT such as 127.0.0.1:8080"};
  std::string_view host;
  std::string_view port;
  if (t.front() == '[') {
    const size_t close = t.find(']');
    if (close == std::string_view::npos) {
      return ConfigError{"address " + quote(t) + " has no closing ']'"};
    }
    host = t.substr(0, close + 1);
    const std::string_view rest = t.substr(close + 1);
    if (rest.empty() || rest.front() != ':') {
      return ConfigError{"address " + quote(t) + " has no port; expected [IPv6]:PORT"};
    }
    port = rest.substr(1);
  } else {
    const size_t colon = t.rfind(':');
    if (colon == std::string_view::npos) {
      return ConfigError{"address " + quote(t) +
                         " has no port; expected HOST:PORT such as 127.0.0.1:8080"};
    }
    host = t.substr(0, colon);
    port = t.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return ConfigError{"address " + quote(t) +
                         ": IPv6 addresses need brackets, as in [::1]:8080"};
    }
    if (host.empty()) {
      return ConfigError{"address " + quote(t) +
                         " has no host; use 0.0.0.0:PORT or [::]:PORT for every interface"};
    }
  }
  uint64_t p = 0;
  if (!parse_uint(port, 65535, p)) {
    return ConfigError{"address " + quote(t) + ": port " + quote(port) +
                       " is not a number in 0..65535"};
  }
  ConfigResult<std::string> h = parse_host(host, /*allow_bare_ipv6=*/false);
  if (!h.ok()) return ConfigError{"address " + quote(t) + ": " + h.error()};
  return HostPort{std::move(h).value(), static_cast<uint16_t>(p)};
}

std::string BackendUrl::to_string() const { return "http://" + HostPort{host, port}.to_string(); }

ConfigResult<BackendUrl> parse_backend_url(std::string_view text) {
  const std::string_view t = trim(text);
  constexpr std::string_view kHttp = "http://";
  if (t.size() >= 8 && iequals(t.substr(0, 8), "https://")) {
    return ConfigError{"backend " + quote(t) +
                       ": https:// backends are not supported yet; use http://HOST:PORT"};
  }
  if (t.size() < kHttp.size() || !iequals(t.substr(0, kHttp.size()), kHttp)) {
    return ConfigError{"backend " + quote(t) + " is not a URL of the form http://HOST:PORT"};
  }
  std::string_view rest = t.substr(kHttp.size());
  const size_t slash = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, slash);
  if (slash != std::string_view::npos) {
    const std::string_view tail = rest.substr(slash);
    if (tail != "/") {
      return ConfigError{"backend " + quote(t) +
                         ": a path, query or fragment is not supported (the agent forwards the "
                         "client's own path); use http://HOST:PORT"};
    }
  }
  if (authority.find('@') != std::string_view::npos) {
    return ConfigError{"backend " + quote(t) + ": credentials in the URL are not supported"};
  }
  if (authority.empty()) return ConfigError{"backend " + quote(t) + " has no host"};
  std::string with_port(authority);
  const bool bracketed = authority.front() == '[';
  const bool has_port = bracketed ? authority.find("]:") != std::string_view::npos
                                  : authority.find(':') != std::string_view::npos;
  if (!has_port) with_port += ":80";
  ConfigResult<HostPort> hp = parse_host_port(with_port);
  if (!hp.ok()) return ConfigError{"backend " + quote(t) + ": " + hp.error()};
  if (hp->port == 0) return ConfigError{"backend " + quote(t) + ": port 0 is not a valid port"};
  return BackendUrl{hp->host, hp->port};
}

ConfigResult<std::chrono::milliseconds> parse_duration(std::string_view text) {
  const std::string_view t = trim(text);
  const auto fail = [&](std::string_view why) {
    return ConfigError{"invalid duration " + quote(t) + ": " + std::string(why) +
                       "; expected a number with ms, s, m or h (\"250ms\", \"10s\", \"5m\") or "
                       "a number of seconds"};
  };
  if (t.empty()) return fail("empty");
  if (t.front() == '-') return fail("negative");
  auto [digits, unit] = split_number(t);
  if (digits.empty()) return fail("no number");
  unit = trim(unit);
  if (!unit.empty() && unit.front() == '.') return fail("fractions are not supported");
  uint64_t scale = 0;
  if (unit.empty() || unit == "s") {
    scale = 1000;
  } else if (unit == "ms") {
    scale = 1;
  } else if (unit == "m" || unit == "min") {
    scale = 60 * 1000;
  } else if (unit == "h") {
    scale = 3600 * 1000;
  } else {
    return fail("unknown unit " + quote(unit));
  }
  // A century is far beyond any timeout; the cap keeps the product in range.
  constexpr uint64_t kMaxMs = 100ull * 365 * 24 * 3600 * 1000;
  uint64_t n = 0;
  if (!parse_uint(digits, kMaxMs / scale, n)) return fail("too large");
  return std::chrono::milliseconds(static_cast<int64_t>(n * scale));
}

std::string format_duration(std::chrono::milliseconds d) {
  const int64_t ms = d.count();
  if (ms == 0) return "0s";
  if (ms % 3600000 == 0) return std::to_string(ms / 3600000) + "h";
  if (ms % 60000 == 0) return std::to_string(ms / 60000) + "m";
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

ConfigResult<uint64_t> parse_size(std::string_view text) {
  const std::string_view t = trim(text);
  const auto fail = [&](std::string_view why) {
    return ConfigError{"invalid size " + quote(t) + ": " + std::string(why) +
                       "; expected bytes or a number with KiB, MiB, GiB (1024s) or KB, MB, GB "
                       "(1000s), such as \"64KiB\""};
  };
  if (t.empty()) return fail("empty");
  if (t.front() == '-') return fail("negative");
  auto [digits, unit] = split_number(t);
  if (digits.empty()) return fail("no number");
  unit = trim(unit);
  if (!unit.empty() && unit.front() == '.') return fail("fractions are not supported");
  struct Unit {
    std::string_view name;
    uint64_t scale;
  };
  static constexpr Unit kUnits[] = {
      {"", 1},
      {"b", 1},
      {"kib", kKiB},
      {"mib", kMiB},
      {"gib", kGiB},
      {"tib", 1024 * kGiB},
      {"kb", 1000},
      {"mb", 1000 * 1000},
      {"gb", 1000ull * 1000 * 1000},
      {"tb", 1000ull * 1000 * 1000 * 1000},
  };
  uint64_t scale = 0;
  for (const Unit& u : kUnits) {
    if (iequals(unit, u.name)) scale = u.scale;
  }
  if (scale == 0) {
    if (iequals(unit, "k") || iequals(unit, "m") || iequals(unit, "g") || iequals(unit, "t")) {
      return fail("ambiguous unit " + quote(unit) + " (say KiB for 1024 or KB for 1000)");
    }
    return fail("unknown unit " + quote(unit));
  }
  uint64_t n = 0;
  if (!parse_uint(digits, std::numeric_limits<uint64_t>::max() / scale, n)) {
    return fail("too large");
  }
  return n * scale;
}

std::string format_size(uint64_t bytes) {
  if (bytes != 0) {
    if (bytes % (1024 * kGiB) == 0) return std::to_string(bytes / (1024 * kGiB)) + "TiB";
    if (bytes % kGiB == 0) return std::to_string(bytes / kGiB) + "GiB";
    if (bytes % kMiB == 0) return std::to_string(bytes / kMiB) + "MiB";
    if (bytes % kKiB == 0) return std::to_string(bytes / kKiB) + "KiB";
  }
  return std::to_string(bytes);
}

ConfigResult<uint16_t> parse_workers(std::string_view text) {
  const std::string_view t = trim(text);
  if (iequals(t, "auto")) return kAutoWorkers;
  uint64_t n = 0;
  if (!parse_uint(t, std::numeric_limits<uint32_t>::max(), n) || n < 1 || n > kMaxWorkers) {
    return ConfigError{"invalid workers " + quote(t) + ": expected \"auto\" or 1.." +
                       std::to_string(kMaxWorkers)};
  }
  return static_cast<uint16_t>(n);
}

unsigned resolve_workers(uint16_t configured, unsigned hardware_threads) {
  if (configured != kAutoWorkers) return configured;
  return std::clamp<unsigned>(hardware_threads, 1, kMaxWorkers);
}

bool is_secret_key(std::string_view key) {
  const std::string k = to_lower(key);
  return k.find("password") != std::string::npos || k.find("token") != std::string::npos;
}

// ---------------------------------------------------------------------------------------------
// The key tables. One table per daemon drives the file, the environment, the flags and
// to_toml(): each key knows how to set itself from a TOML value or from text, and how to print
// itself. A "draft" is the configuration being built plus anything not in the final struct.

namespace {

// A value from one source: the file (toml set) or the environment / a flag (text).
struct Raw {
  const toml::value* toml = nullptr;
  std::string_view text;
};

// Where a value came from; a later source overrides an earlier one.
enum class Layer : uint8_t { kDefault, kFile, kEnv, kFlag };

// "an integer", "a string": for type errors.
std::string type_name(const toml::value& v) {
  switch (v.type()) {
    case toml::value_t::boolean:
      return "a boolean";
    case toml::value_t::integer:
      return "an integer";
    case toml::value_t::floating:
      return "a float";
    case toml::value_t::string:
      return "a string";
    case toml::value_t::offset_datetime:
    case toml::value_t::local_datetime:
    case toml::value_t::local_date:
    case toml::value_t::local_time:
      return "a date/time";
    case toml::value_t::array:
      return "an array";
    case toml::value_t::table:
      return "a table";
    case toml::value_t::empty:
      break;
  }
  return "nothing";
}

// The text of a string value (TOML string or env/flag text), or a type error.
ConfigResult<std::string> text_of(const Raw& raw, std::string_view expected) {
  if (!raw.toml) return std::string(raw.text);
  if (!raw.toml->is_string()) {
    return ConfigError{"expected " + std::string(expected) + ", got " + type_name(*raw.toml)};
  }
  return raw.toml->as_string().str;
}

std::string range_error(uint64_t min, uint64_t max, uint64_t got, bool sizes) {
  const auto fmt = [&](uint64_t v) { return sizes ? format_size(v) : std::to_string(v); };
  return "must be between " + fmt(min) + " and " + fmt(max) + ", got " + fmt(got);
}

// Reads an integer: a TOML integer, or decimal text. Not range-checked beyond uint64.
ConfigResult<uint64_t> integer_of(const Raw& raw) {
  if (raw.toml) {
    if (!raw.toml->is_integer()) {
      return ConfigError{"expected an integer, got " + type_name(*raw.toml)};
    }
    const int64_t v = raw.toml->as_integer();
    if (v < 0) return ConfigError{"must not be negative, got " + std::to_string(v)};
    return static_cast<uint64_t>(v);
  }
  const std::string_view t = trim(raw.text);
  uint64_t v = 0;
  if (!parse_uint(t, std::numeric_limits<uint64_t>::max(), v)) {
    return ConfigError{"expected an integer, got " + quote(t)};
  }
  return v;
}

template <typename D>
struct KeyDef {
  std::string key;  // Dotted: "tunnel.ping_interval".
  std::string env;  // COILGUN_TUNNEL_PING_INTERVAL.
  // Sets the value; returns "" or why not (without location).
  std::function<std::string(D&, const Raw&)> set;
  // The value as a TOML literal, or nullopt when unset (printed as a comment).
  std::function<std::optional<std::string>(const D&)> print;
  bool secret = false;
};

std::string env_name(std::string_view key) {
  std::string out = "COILGUN_";
  for (char c : key) out += (c == '.') ? '_' : upper(c);
  return out;
}

template <typename D>
KeyDef<D> make_key(std::string key, std::function<std::string(D&, const Raw&)> set,
                   std::function<std::optional<std::string>(const D&)> print) {
  std::string env = env_name(key);
  return KeyDef<D>{std::move(key), std::move(env), std::move(set), std::move(print), false};
}

// A key whose value is a string: |parse| turns the text into the field's value (or says why
// not), |print| gives the value as a TOML literal (nullopt: unset).
template <typename D, typename F, typename Parse, typename Print>
KeyDef<D> text_key(std::string key, F field, const char* expected, Parse parse, Print print) {
  return make_key<D>(
      std::move(key),
      [field, expected, parse](D& d, const Raw& raw) -> std::string {
        ConfigResult<std::string> t = text_of(raw, expected);
        if (!t.ok()) return t.error();
        auto value = parse(*t);
        if (!value.ok()) return value.error();
        field(d) = std::move(value).value();
        return "";
      },
      [field, print](const D& d) -> std::optional<std::string> { return print(field(d)); });
}

template <typename D, typename F>
KeyDef<D> host_port_key(std::string key, F field) {
  return text_key<D>(
      std::move(key), field, "a string like \"127.0.0.1:8080\"", parse_host_port,
      [](const HostPort& v) -> std::optional<std::string> { return quote(v.to_string()); });
}

// Like host_port_key for a std::optional<HostPort> (unset by default).
template <typename D, typename F>
KeyDef<D> optional_host_port_key(std::string key, F field) {
  return text_key<D>(std::move(key), field, "a string like \"10.0.0.1:2408\"", parse_host_port,
                     [](const std::optional<HostPort>& v) -> std::optional<std::string> {
                       if (!v) return std::nullopt;
                       return quote(v->to_string());
                     });
}

template <typename D, typename F>
KeyDef<D> backend_key(std::string key, F field) {
  return text_key<D>(std::move(key), field, "a string like \"http://127.0.0.1:8080\"",
                     parse_backend_url, [](const BackendUrl& v) -> std::optional<std::string> {
                       if (v.empty()) return std::nullopt;
                       return quote(v.to_string());
                     });
}

// A string checked by |check| (returns the value, normalised, or why not).
template <typename D, typename F>
KeyDef<D> string_key(std::string key, F field,
                     std::function<ConfigResult<std::string>(std::string_view)> check) {
  return text_key<D>(std::move(key), field, "a string", check,
                     [](const std::string& v) -> std::optional<std::string> {
                       if (v.empty()) return std::nullopt;
                       return quote(v);
                     });
}

ConfigResult<std::string> non_empty_path(std::string_view s) {
  if (s.empty()) return ConfigError{"must not be empty"};
  return std::string(s);
}

// Any path, or "" for none (the default).
ConfigResult<std::string> any_path(std::string_view s) { return std::string(s); }

ConfigResult<std::string> namespace_value(std::string_view s) {
  if (s.empty() || s.size() > 64) {
    return ConfigError{"namespace must be 1..64 characters, got " + quote(s)};
  }
  for (char c : s) {
    const bool ok = is_digit(c) || (ascii_lower(c) >= 'a' && ascii_lower(c) <= 'z') || c == '.' ||
                    c == '_' || c == '-';
    if (!ok) {
      return ConfigError{"namespace " + quote(s) + " may only hold letters, digits, '.', '_', '-'"};
    }
  }
  return std::string(s);
}

// A certificate name: a DNS name (lower-cased) or an IP address (IPv6 with or without
// brackets).
ConfigResult<std::string> agent_name_value(std::string_view s) {
  ConfigResult<std::string> h = parse_host(trim(s), /*allow_bare_ipv6=*/true);
  if (!h.ok()) return ConfigError{"invalid agent name " + quote(s) + ": " + h.error()};
  return h;
}

// Why duration |got| is outside [min, max]; max == milliseconds::max() means no upper bound.
std::string duration_range_error(milliseconds min, milliseconds max, milliseconds got) {
  if (max == milliseconds::max()) {
    return "must be at least " + format_duration(min) + ", got " + format_duration(got);
  }
  return "must be between " + format_duration(min) + " and " + format_duration(max) + ", got " +
         format_duration(got);
}

template <typename D, typename F>
KeyDef<D> duration_key(std::string key, F field, milliseconds min = milliseconds(1),
                       milliseconds max = milliseconds::max()) {
  return make_key<D>(
      std::move(key),
      [field, min, max](D& d, const Raw& raw) -> std::string {
        milliseconds v{};
        if (raw.toml && raw.toml->is_integer()) {
          const int64_t s = raw.toml->as_integer();
          if (s < 0) return "must not be negative, got " + std::to_string(s);
          ConfigResult<milliseconds> r = parse_duration(std::to_string(s));
          if (!r.ok()) return r.error();
          v = *r;
        } else {
          ConfigResult<std::string> t = text_of(raw, "a duration like \"10s\" or an integer");
          if (!t.ok()) return t.error();
          ConfigResult<milliseconds> r = parse_duration(*t);
          if (!r.ok()) return r.error();
          v = *r;
        }
        if (v < min || v > max) return duration_range_error(min, max, v);
        field(d) = v;
        return "";
      },
      [field](const D& d) -> std::optional<std::string> {
        return quote(format_duration(field(d)));
      });
}

template <typename D, typename F>
KeyDef<D> size_key(std::string key, F field, uint64_t min, uint64_t max) {
  return make_key<D>(
      std::move(key),
      [field, min, max](D& d, const Raw& raw) -> std::string {
        uint64_t v = 0;
        if (raw.toml && raw.toml->is_integer()) {
          ConfigResult<uint64_t> r = integer_of(raw);
          if (!r.ok()) return r.error();
          v = *r;
        } else {
          ConfigResult<std::string> t = text_of(raw, "a size like \"64KiB\" or an integer");
          if (!t.ok()) return t.error();
          ConfigResult<uint64_t> r = parse_size(*t);
          if (!r.ok()) return r.error();
          v = *r;
        }
        if (v < min || v > max) return range_error(min, max, v, /*sizes=*/true);
        field(d) = v;
        return "";
      },
      [field](const D& d) -> std::optional<std::string> {
        const std::string s = format_size(field(d));
        return is_digit(s.back()) ? s : quote(s);
      });
}

template <typename D, typename F>
KeyDef<D> int_key(std::string key, F field, int64_t min, int64_t max) {
  return make_key<D>(
      std::move(key),
      [field, min, max](D& d, const Raw& raw) -> std::string {
        ConfigResult<uint64_t> r = integer_of(raw);
        if (!r.ok()) return r.error();
        const uint64_t v = *r;
        if (v < static_cast<uint64_t>(min) || v > static_cast<uint64_t>(max)) {
          return range_error(static_cast<uint64_t>(min), static_cast<uint64_t>(max), v, false);
        }
        using T = std::remove_reference_t<decltype(field(d))>;
        field(d) = static_cast<T>(v);
        return "";
      },
      [field](const D& d) -> std::optional<std::string> { return std::to_string(field(d)); });
}

template <typename D, typename F>
KeyDef<D> bool_key(std::string key, F field) {
  return make_key<D>(
      std::move(key),
      [field](D& d, const Raw& raw) -> std::string {
        if (raw.toml) {
          if (!raw.toml->is_boolean()) return "expected true or false, got " + type_name(*raw.toml);
          field(d) = raw.toml->as_boolean();
          return "";
        }
        const std::string_view t = trim(raw.text);
        for (std::string_view yes : {"true", "1", "yes", "on"}) {
          if (iequals(t, yes)) {
            field(d) = true;
            return "";
          }
        }
        for (std::string_view no : {"false", "0", "no", "off"}) {
          if (iequals(t, no)) {
            field(d) = false;
            return "";
          }
        }
        return "expected true or false, got " + quote(t);
      },
      [field](const D& d) -> std::optional<std::string> {
        return std::string(field(d) ? "true" : "false");
      });
}

template <typename D, typename F>
KeyDef<D> workers_key(std::string key, F field) {
  return make_key<D>(
      std::move(key),
      [field](D& d, const Raw& raw) -> std::string {
        if (raw.toml && raw.toml->is_integer()) {
          const int64_t n = raw.toml->as_integer();
          if (n < 1 || n > kMaxWorkers) {
            return "expected \"auto\" or 1.." + std::to_string(kMaxWorkers) + ", got " +
                   std::to_string(n);
          }
          field(d) = static_cast<uint16_t>(n);
          return "";
        }
        ConfigResult<std::string> t = text_of(raw, "\"auto\" or an integer");
        if (!t.ok()) return t.error();
        ConfigResult<uint16_t> w = parse_workers(*t);
        if (!w.ok()) return w.error();
        field(d) = *w;
        return "";
      },
      [field](const D& d) -> std::optional<std::string> {
        if (field(d) == kAutoWorkers) return quote("auto");
        return std::to_string(field(d));
      });
}

template <typename D, typename F>
KeyDef<D> log_level_key(std::string key, F field) {
  return make_key<D>(
      std::move(key),
      [field](D& d, const Raw& raw) -> std::string {
        ConfigResult<std::string> t =
            text_of(raw, "one of \"debug\", \"info\", \"warn\", \"error\"");
        if (!t.ok()) return t.error();
        Result<log::Level> l = log::parse_level(*t);
        if (!l.ok()) {
          return "invalid log level " + quote(trim(*t)) + ": expected debug, info, warn or error";
        }
        field(d) = *l;
        return "";
      },
      [field](const D& d) -> std::optional<std::string> {
        return quote(log::level_name(field(d)));
      });
}

// The largest flow-control window a frame can express (proto/frame.h).
constexpr uint64_t kMaxWindow = 0x7fffffff;
constexpr uint64_t kMaxSize = std::numeric_limits<uint64_t>::max();

// The configurations being built. The edge's default route is kept as its two keys until the
// end, because which agent_name applies depends on where each came from.
struct OriginDraft {
  OriginConfig cfg;
};

struct EdgeDraft {
  EdgeConfig cfg;
  std::optional<HostPort> agent;
  std::string agent_name;
};

#define COILGUN_CONFIG_FIELD(expr) \
  [](auto& d) -> auto& { return d.expr; }

const std::vector<KeyDef<OriginDraft>>& origin_keys() {
  using D = OriginDraft;
  static const std::vector<KeyDef<D>> keys = {
      host_port_key<D>("listen", COILGUN_CONFIG_FIELD(cfg.listen)),
      host_port_key<D>("admin", COILGUN_CONFIG_FIELD(cfg.admin)),
      backend_key<D>("backend", COILGUN_CONFIG_FIELD(cfg.backend)),
      string_key<D>("namespace", COILGUN_CONFIG_FIELD(cfg.namespace_name), namespace_value),
      workers_key<D>("workers", COILGUN_CONFIG_FIELD(cfg.workers)),
      duration_key<D>("drain_timeout", COILGUN_CONFIG_FIELD(cfg.drain_timeout), milliseconds(0)),
      string_key<D>("tls.ca", COILGUN_CONFIG_FIELD(cfg.tls.ca), non_empty_path),
      string_key<D>("tls.cert", COILGUN_CONFIG_FIELD(cfg.tls.cert), non_empty_path),
      string_key<D>("tls.key", COILGUN_CONFIG_FIELD(cfg.tls.key), non_empty_path),
      size_key<D>("delta.max_body", COILGUN_CONFIG_FIELD(cfg.delta.max_body), 1, kMaxSize),
      int_key<D>("delta.effort", COILGUN_CONFIG_FIELD(cfg.delta.effort), 1, 9),
      int_key<D>("delta.full_level", COILGUN_CONFIG_FIELD(cfg.delta.full_level), 1, 19),
      duration_key<D>("delta.stream_after", COILGUN_CONFIG_FIELD(cfg.delta.stream_after),
                      milliseconds(1), milliseconds(60000)),
      size_key<D>("store.max_bytes", COILGUN_CONFIG_FIELD(cfg.store.max_bytes), 1, kMaxSize),
      int_key<D>("store.versions_per_key", COILGUN_CONFIG_FIELD(cfg.store.versions_per_key), 1, 64),
      int_key<D>("backend_pool.max_idle_per_worker",
                 COILGUN_CONFIG_FIELD(cfg.backend_pool.max_idle_per_worker), 0, 65535),
      duration_key<D>("backend_pool.connect_timeout",
                      COILGUN_CONFIG_FIELD(cfg.backend_pool.connect_timeout)),
      duration_key<D>("backend_pool.response_timeout",
                      COILGUN_CONFIG_FIELD(cfg.backend_pool.response_timeout)),
      size_key<D>("limits.max_header_bytes", COILGUN_CONFIG_FIELD(cfg.limits.max_header_bytes),
                  1 * kKiB, 16 * kMiB),
      int_key<D>("limits.max_headers", COILGUN_CONFIG_FIELD(cfg.limits.max_headers), 1, 65535),
      duration_key<D>("tunnel.ping_interval", COILGUN_CONFIG_FIELD(cfg.tunnel.ping_interval)),
      size_key<D>("tunnel.stream_window", COILGUN_CONFIG_FIELD(cfg.tunnel.stream_window), 1,
                  kMaxWindow),
      size_key<D>("tunnel.connection_window", COILGUN_CONFIG_FIELD(cfg.tunnel.connection_window), 1,
                  kMaxWindow),
      int_key<D>("tunnel.max_streams", COILGUN_CONFIG_FIELD(cfg.tunnel.max_streams), 1, 1 << 20),
      duration_key<D>("tunnel.handshake_timeout",
                      COILGUN_CONFIG_FIELD(cfg.tunnel.handshake_timeout), kMinHandshakeTimeout,
                      kMaxHandshakeTimeout),
      int_key<D>("tunnel.max_pending_handshakes",
                 COILGUN_CONFIG_FIELD(cfg.tunnel.max_pending_handshakes), 1, kMaxPendingHandshakes),
      int_key<D>("tunnel.max_pending_per_source",
                 COILGUN_CONFIG_FIELD(cfg.tunnel.max_pending_per_source), 1, kMaxPendingHandshakes),
      log_level_key<D>("log.level", COILGUN_CONFIG_FIELD(cfg.log.level)),
      bool_key<D>("log.access", COILGUN_CONFIG_FIELD(cfg.log.access)),
      string_key<D>("log.file", COILGUN_CONFIG_FIELD(cfg.log.file), any_path),
  };
  return keys;
}

const std::vector<KeyDef<EdgeDraft>>& edge_keys() {
  using D = EdgeDraft;
  static const std::vector<KeyDef<D>> keys = {
      host_port_key<D>("listen", COILGUN_CONFIG_FIELD(cfg.listen)),
      host_port_key<D>("admin", COILGUN_CONFIG_FIELD(cfg.admin)),
      optional_host_port_key<D>("agent", COILGUN_CONFIG_FIELD(agent)),
      string_key<D>("agent_name", COILGUN_CONFIG_FIELD(agent_name), agent_name_value),
      workers_key<D>("workers", COILGUN_CONFIG_FIELD(cfg.workers)),
      duration_key<D>("drain_timeout", COILGUN_CONFIG_FIELD(cfg.drain_timeout), milliseconds(0)),
      string_key<D>("tls.ca", COILGUN_CONFIG_FIELD(cfg.tls.ca), non_empty_path),
      string_key<D>("tls.cert", COILGUN_CONFIG_FIELD(cfg.tls.cert), non_empty_path),
      string_key<D>("tls.key", COILGUN_CONFIG_FIELD(cfg.tls.key), non_empty_path),
      int_key<D>("tunnel.connections", COILGUN_CONFIG_FIELD(cfg.tunnel.connections), 1, 64),
      duration_key<D>("tunnel.connect_timeout", COILGUN_CONFIG_FIELD(cfg.tunnel.connect_timeout)),
      duration_key<D>("tunnel.ping_interval", COILGUN_CONFIG_FIELD(cfg.tunnel.ping_interval)),
      duration_key<D>("tunnel.answer_timeout", COILGUN_CONFIG_FIELD(cfg.tunnel.answer_timeout),
                      milliseconds(100), milliseconds(5 * 60 * 1000)),
      duration_key<D>("tunnel.backoff_min", COILGUN_CONFIG_FIELD(cfg.tunnel.backoff_min)),
      duration_key<D>("tunnel.backoff_max", COILGUN_CONFIG_FIELD(cfg.tunnel.backoff_max)),
      size_key<D>("tunnel.stream_window", COILGUN_CONFIG_FIELD(cfg.tunnel.stream_window), 1,
                  kMaxWindow),
      size_key<D>("tunnel.connection_window", COILGUN_CONFIG_FIELD(cfg.tunnel.connection_window), 1,
                  kMaxWindow),
      size_key<D>("store.max_bytes", COILGUN_CONFIG_FIELD(cfg.store.max_bytes), 1, kMaxSize),
      int_key<D>("store.versions_per_key", COILGUN_CONFIG_FIELD(cfg.store.versions_per_key), 1, 64),
      size_key<D>("limits.max_header_bytes", COILGUN_CONFIG_FIELD(cfg.limits.max_header_bytes),
                  1 * kKiB, 16 * kMiB),
      int_key<D>("limits.max_headers", COILGUN_CONFIG_FIELD(cfg.limits.max_headers), 1, 65535),
      size_key<D>("limits.max_coded_body", COILGUN_CONFIG_FIELD(cfg.limits.max_coded_body), 1,
                  kMaxSize),
      duration_key<D>("limits.client_idle_timeout",
                      COILGUN_CONFIG_FIELD(cfg.limits.client_idle_timeout)),
      duration_key<D>("limits.client_header_timeout",
                      COILGUN_CONFIG_FIELD(cfg.limits.client_header_timeout)),
      duration_key<D>("limits.client_body_timeout",
                      COILGUN_CONFIG_FIELD(cfg.limits.client_body_timeout)),
      int_key<D>("limits.max_client_connections",
                 COILGUN_CONFIG_FIELD(cfg.limits.max_client_connections), 1, 1 << 20),
      duration_key<D>("limits.request_timeout", COILGUN_CONFIG_FIELD(cfg.limits.request_timeout)),
      log_level_key<D>("log.level", COILGUN_CONFIG_FIELD(cfg.log.level)),
      bool_key<D>("log.access", COILGUN_CONFIG_FIELD(cfg.log.access)),
      string_key<D>("log.file", COILGUN_CONFIG_FIELD(cfg.log.file), any_path),
  };
  return keys;
}

#undef COILGUN_CONFIG_FIELD

template <typename D>
const KeyDef<D>* find_key(const std::vector<KeyDef<D>>& keys, std::string_view key) {
  for (const KeyDef<D>& k : keys) {
    if (k.key == key) return &k;
  }
  return nullptr;
}

// The tables the keys live in ("tls", "tunnel"...).
template <typename D>
std::set<std::string, std::less<>> table_names(const std::vector<KeyDef<D>>& keys) {
  std::set<std::string, std::less<>> out;
  for (const KeyDef<D>& k : keys) {
    const size_t dot = k.key.find('.');
    if (dot != std::string::npos) out.insert(k.key.substr(0, dot));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Collecting errors

// Errors of one load: those from the file carry a line and are sorted by it.
struct Errors {
  std::string file;
  std::vector<std::pair<uint32_t, std::string>> located;
  std::vector<std::string> other;

  void at(const toml::value& v, const std::string& message) {
    located.emplace_back(v.location().line(),
                         file + ":" + std::to_string(v.location().line()) + ": " + message);
  }
  void add(std::string message) { other.push_back(std::move(message)); }
  bool empty() const { return located.empty() && other.empty(); }
  std::string text() {
    std::stable_sort(located.begin(), located.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    std::vector<std::string> lines;
    for (auto& l : located) lines.push_back(l.second);
    for (auto& o : other) lines.push_back(o);
    return join_lines(lines);
  }
};

// Where an operator can set |key|, for "is not set" errors.
std::string where_to_set(std::string_view key, std::string_view flag) {
  std::string out = "set ";
  if (!flag.empty()) out += std::string(flag) + ", ";
  out += env_name(key) + " or ";
  const size_t dot = key.find('.');
  if (dot == std::string_view::npos) {
    out += std::string(key) + " = in the config file";
  } else {
    out += std::string(key.substr(dot + 1)) + " = in the [" + std::string(key.substr(0, dot)) +
           "] table of the config file";
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The file

// Reports |v| (found under dotted |key|) and, if it is a non-empty table, every key inside it,
// as unknown.
void report_unknown(const std::string& key, const toml::value& v,
                    const std::vector<std::string>& known, Errors& errors) {
  if (v.is_table() && !v.as_table().empty()) {
    for (const auto& [k, sub] : v.as_table()) report_unknown(key + "." + k, sub, known, errors);
    return;
  }
  errors.at(v, "unknown key " + quote(key) + suggestion(key, known));
}

template <typename D>
std::vector<std::string> known_names(const std::vector<KeyDef<D>>& keys, bool routes) {
  std::vector<std::string> out;
  for (const KeyDef<D>& k : keys) out.push_back(k.key);
  if (routes) {
    for (const char* r : {"route.hosts", "route.host", "route.agent", "route.agent_name",
                          "route.request_timeout", "route.backend_timeout",
                          "route.private_deltas"}) {
      out.push_back(r);
    }
  }
  return out;
}

// Applies every key of |table| (the file's root or one of its tables, named |prefix|) to |d|.
// |on_special| handles root keys the table does not know (the edge's routes); returns false
// when it does not know them either.
template <typename D>
void apply_file_table(
    const std::vector<KeyDef<D>>& keys, const toml::value& table, const std::string& prefix, D& d,
    std::map<std::string, Layer>& layers, Errors& errors, const std::vector<std::string>& known,
    const std::function<bool(const std::string&, const toml::value&)>& on_special) {
  const auto tables = table_names(keys);
  for (const auto& [k, v] : table.as_table()) {
    const std::string key = prefix.empty() ? k : prefix + "." + k;
    if (const KeyDef<D>* def = find_key(keys, key)) {
      if (v.is_table()) {
        errors.at(v, key + ": expected a value, got a table");
        continue;
      }
      if (std::string why = def->set(d, Raw{&v, {}}); !why.empty()) {
        errors.at(v, key + ": " + why);
      } else {
        layers[key] = Layer::kFile;
      }
    } else if (prefix.empty() && tables.contains(key)) {
      if (!v.is_table()) {
        errors.at(v, key + ": expected a table ([" + key + "]), got " + type_name(v));
        continue;
      }
      apply_file_table(keys, v, key, d, layers, errors, known, on_special);
    } else if (prefix.empty() && on_special && on_special(key, v)) {
      continue;
    } else {
      report_unknown(key, v, known, errors);
    }
  }
}

// Reads |path| whole, or explains why not.
ConfigResult<std::string> read_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return ConfigError{path + ": is a directory, not a config file"};
  }
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return ConfigError{path + ": cannot open config file: " + std::strerror(errno)};
  std::string out;
  char buf[8192];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) return ConfigError{path + ": cannot read config file"};
  return out;
}

// Why |text| cannot be handed to toml11, with the line (1-based); an empty reason when it can.
// Refused: a byte sequence that is not UTF-8 (RFC 3629: no overlong forms, no surrogates,
// nothing above U+10FFFF), a control character other than tab, LF and CR (TOML 1.0 allows none,
// in any place), and arrays or inline tables nested deeper than kMaxNesting. Checked by hand
// before toml11 sees the text: toml11 3.7 (Debian's) reads past the end of its buffer on some
// invalid UTF-8 in a literal string, and recurses once per nesting level until the stack
// overflows (both found by config_loader_fuzz); a config file must never crash a daemon,
// however broken.
struct Refusal {
  size_t line = 0;
  const char* why = "";
};
constexpr int kMaxNesting = 32;

size_t utf8_length(std::string_view text, size_t i) {
  const auto c = static_cast<unsigned char>(text[i]);
  const size_t n = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 0;
  if (n == 0 || c > 0xf4 || c == 0xc0 || c == 0xc1 || i + n > text.size()) return 0;
  uint32_t cp = c & (0x7f >> n);
  for (size_t k = 1; k < n; ++k) {
    const auto cc = static_cast<unsigned char>(text[i + k]);
    if ((cc & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (cc & 0x3f);
  }
  const uint32_t min = n == 2 ? 0x80 : n == 3 ? 0x800 : 0x10000;
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return n;
}

Refusal check_document(std::string_view text) {
  size_t line = 1;
  int depth = 0;
  char quote = 0;  // Inside a string: its quote character.
  bool comment = false;
  for (size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80) {
      const size_t n = utf8_length(text, i);
      if (n == 0) return {line, "a byte that is not UTF-8"};
      i += n;
      continue;
    }
    if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f) {
      return {line, "a control character"};
    }
    if (c == '\n') {
      ++line;
      comment = false;
    } else if (comment) {
    } else if (quote != 0) {
      if (c == '\\' && quote == '"') ++i;  // An escape: the next byte is not a quote.
      else if (c == quote) quote = 0;
    } else if (c == '"' || c == '\'') {
      quote = static_cast<char>(c);
    } else if (c == '#') {
      comment = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxNesting) return {line, "arrays or tables nested too deep"};
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
    ++i;
  }
  return {};
}

// Parses TOML, turning toml11's exceptions into "file:line: message" with its source excerpt.
ConfigResult<toml::value> parse_toml(std::string_view text, const std::string& file_name) {
  if (const Refusal r = check_document(text); r.line != 0) {
    return ConfigError{file_name + ":" + std::to_string(r.line) + ": not a TOML document: " + r.why};
  }
  try {
    std::istringstream in{std::string(text)};
    return toml::parse(in, file_name);
  } catch (const toml::exception& e) {
    std::string what = e.what();
    // toml11 writes "[error] toml::parse_xxx: message\n --> file\n excerpt...".
    if (what.starts_with("[error] ")) what.erase(0, 8);
    if (what.starts_with("toml::")) {
      const size_t colon = what.find(": ");
      if (colon != std::string::npos) what.erase(0, colon + 2);
    }
    return ConfigError{file_name + ":" + std::to_string(e.location().line()) + ": " + what};
  } catch (const std::exception& e) {
    return ConfigError{file_name + ": " + e.what()};
  }
}

// ---------------------------------------------------------------------------------------------
// The environment and the flags

// Applies every COILGUN_* variable the table knows; others become warnings.
template <typename D>
void apply_env(const std::vector<KeyDef<D>>& keys, const EnvMap& env, D& d,
               std::map<std::string, Layer>& layers, Errors& errors,
               std::vector<std::string>& warnings) {
  std::vector<std::string> env_names = {"COILGUN_CONFIG"};
  for (const KeyDef<D>& k : keys) env_names.push_back(k.env);
  for (const auto& [name, value] : env) {
    if (!name.starts_with("COILGUN_") || name == "COILGUN_CONFIG") continue;
    const KeyDef<D>* def = nullptr;
    for (const KeyDef<D>& k : keys) {
      if (k.env == name) def = &k;
    }
    if (!def) {
      warnings.push_back("unknown environment variable " + name + " ignored" +
                         suggestion(name, env_names));
      continue;
    }
    if (trim(value).empty()) {
      warnings.push_back("environment variable " + name + " is empty; ignored");
      continue;
    }
    if (std::string why = def->set(d, Raw{nullptr, value}); !why.empty()) {
      errors.add("environment variable " + name + ": " + why);
    } else {
      layers[def->key] = Layer::kEnv;
    }
  }
}

// One command-line option that sets a key.
struct FlagDef {
  const char* flag;  // "--listen"
  const char* key;   // "listen"
  const char* type;  // "HOST:PORT", shown in --help.
  const char* help;
};

template <typename D, typename Config>
ConfigResult<Invocation<Config>> load(
    const char* program, const char* description, const std::vector<FlagDef>& flag_defs,
    const std::vector<KeyDef<D>>& keys, int argc, const char* const* argv, const EnvMap& env,
    const std::function<bool(D&, const std::string&, const toml::value&, Errors&)>& on_special,
    const std::function<void(D&, const std::map<std::string, Layer>&, Errors&)>& finish) {
  Invocation<Config> inv;
  CLI::App app{description, program};
  app.set_help_flag();  // Our own --help below: recognised, not thrown.
  std::string config_path;
  bool help = false;
  bool version = false;
  bool check = false;
  bool print_config = false;
  app.add_option("-c,--config", config_path, "TOML config file (or COILGUN_CONFIG)")
      ->type_name("FILE");
  std::vector<std::string> values(flag_defs.size());
  std::vector<CLI::Option*> options;
  for (size_t i = 0; i < flag_defs.size(); ++i) {
    options.push_back(app.add_option(flag_defs[i].flag, values[i], flag_defs[i].help)
                          ->type_name(flag_defs[i].type)
                          ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast));
  }
  app.add_flag("--check", check, "Validate the config and certificates, then exit 0 or 1");
  app.add_flag("--print-config", print_config,
               "Print the effective configuration (TOML, secrets redacted), then exit");
  app.add_flag("--version", version, "Print the version and exit");
  app.add_flag("-h,--help", help, "Print this help and exit");
  app.footer(
      "Precedence: flag > COILGUN_* environment > config file > default.\n"
      "Every config key K can be set with COILGUN_<K>, dots as underscores, upper case,\n"
      "e.g. COILGUN_TUNNEL_PING_INTERVAL=5s.\n");
  inv.help_text = app.help();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return ConfigError{std::string(program) + ": " + e.what() + " (see --help)"};
  }
  inv.help = help;
  inv.version = version;
  inv.check = check;
  inv.print_config = print_config;
  if (help || version) return inv;

  if (config_path.empty()) {
    if (auto it = env.find("COILGUN_CONFIG"); it != env.end()) config_path = it->second;
  }
  inv.config_path = config_path;

  D d;
  std::map<std::string, Layer> layers;
  Errors errors;
  if (!config_path.empty()) {
    ConfigResult<std::string> text = read_file(config_path);
    if (!text.ok()) return ConfigError{text.error()};
    ConfigResult<toml::value> root = parse_toml(*text, config_path);
    if (!root.ok()) return ConfigError{root.error()};
    errors.file = config_path;
    const std::vector<std::string> known = known_names(keys, static_cast<bool>(on_special));
    apply_file_table<D>(keys, *root, "", d, layers, errors, known,
                        [&](const std::string& key, const toml::value& v) {
                          return on_special && on_special(d, key, v, errors);
                        });
  }
  apply_env(keys, env, d, layers, errors, inv.warnings);
  for (size_t i = 0; i < flag_defs.size(); ++i) {
    if (options[i]->count() == 0) continue;
    const KeyDef<D>* def = find_key(keys, flag_defs[i].key);
    if (std::string why = def->set(d, Raw{nullptr, values[i]}); !why.empty()) {
      errors.add(std::string(flag_defs[i].flag) + ": " + why);
    } else {
      layers[def->key] = Layer::kFlag;
    }
  }
  if (errors.empty()) finish(d, layers, errors);
  if (!errors.empty()) return ConfigError{errors.text()};
  inv.config = std::move(d.cfg);
  return inv;
}

// Checks the TLS keys are all set.
void require_tls(const TlsConfig& tls, Errors& errors) {
  const std::pair<const std::string*, const char*> files[] = {
      {&tls.ca, "tls.ca"}, {&tls.cert, "tls.cert"}, {&tls.key, "tls.key"}};
  for (const auto& [value, key] : files) {
    if (value->empty()) {
      std::string flag = std::string("--") + key;
      flag[5] = '-';  // "--tls.ca" -> "--tls-ca"
      errors.add(std::string(key) + " is not set; " + where_to_set(key, flag));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The origin

void finish_origin(OriginDraft& d, const std::map<std::string, Layer>&, Errors& errors) {
  if (d.cfg.backend.empty()) {
    errors.add("backend is not set; " + where_to_set("backend", "--backend"));
  }
  require_tls(d.cfg.tls, errors);
}

const std::vector<FlagDef>& origin_flags() {
  static const std::vector<FlagDef> flags = {
      {"--listen", "listen", "HOST:PORT", "Tunnel listener HOST:PORT (default 0.0.0.0:2408)"},
      {"--backend", "backend", "URL", "Web server to forward to, http://HOST:PORT"},
      {"--admin", "admin", "HOST:PORT", "Admin listener HOST:PORT (default 127.0.0.1:9408)"},
      {"--tls-ca", "tls.ca", "FILE", "CA certificate (PEM) edges must be signed by"},
      {"--tls-cert", "tls.cert", "FILE", "This agent's certificate (PEM)"},
      {"--tls-key", "tls.key", "FILE", "This agent's private key (PEM)"},
      {"--workers", "workers", "N|auto", "Worker loops: N (1..256) or auto (default auto)"},
      {"--log-level", "log.level", "LEVEL", "debug, info, warn or error (default info)"},
  };
  return flags;
}

// ---------------------------------------------------------------------------------------------
// The edge

// A route's timeout: a duration string ("90s") or a number of seconds, from 1 ms to a day.
ConfigResult<milliseconds> route_duration(const toml::value& x) {
  ConfigResult<milliseconds> d =
      x.is_integer()  ? parse_duration(std::to_string(x.as_integer()))
      : x.is_string() ? parse_duration(x.as_string().str)
                      : ConfigResult<milliseconds>(
                            ConfigError{"expected a duration like \"90s\", got " + type_name(x)});
  if (!d.ok()) return d;
  if (*d < milliseconds(1) || *d > milliseconds(86400000)) {
    return ConfigError{"must be from 1ms to 24h"};
  }
  return d;
}

// Reads one [[route]] table into |route|; reports problems at their lines.
void read_route(const toml::value& v, const std::vector<std::string>& known, EdgeRoute& route,
                Errors& errors) {
  if (!v.is_table()) {
    errors.at(v, "route: expected a table ([[route]]), got " + type_name(v));
    return;
  }
  bool have_hosts = false;
  bool have_agent = false;
  bool have_name = false;
  const auto add_host = [&](const std::string& key, const toml::value& h) {
    if (!h.is_string()) {
      errors.at(h, "route." + key + ": expected a string, got " + type_name(h));
      return;
    }
    std::string pattern = to_lower(trim(h.as_string().str));
    if (!pattern.empty() && pattern.back() == '.') pattern.pop_back();
    if (pattern.size() > 2 && pattern.front() == '[' && pattern.back() == ']') {
      pattern = pattern.substr(1, pattern.size() - 2);
    }
    if (std::string why = host_pattern_problem(pattern); !why.empty()) {
      errors.at(h, "route." + key + ": " + why);
      return;
    }
    route.hosts.push_back(std::move(pattern));
  };
  for (const auto& [k, x] : v.as_table()) {
    if (k == "hosts" || k == "host") {
      if (have_hosts) {
        errors.at(x, "route: give either hosts or host, not both");
        continue;
      }
      have_hosts = true;
      if (k == "host") {
        add_host(k, x);
      } else if (!x.is_array()) {
        errors.at(x, "route.hosts: expected an array of strings, got " + type_name(x));
      } else if (x.as_array().empty()) {
        errors.at(x, "route.hosts: must not be empty");
      } else {
        for (const toml::value& h : x.as_array()) add_host(k, h);
      }
    } else if (k == "agent") {
      have_agent = true;
      if (!x.is_string()) {
        errors.at(x, "route.agent: expected a string like \"10.0.0.1:2408\", got " + type_name(x));
        continue;
      }
      ConfigResult<HostPort> hp = parse_host_port(x.as_string().str);
      if (!hp.ok()) {
        errors.at(x, "route.agent: " + hp.error());
      } else {
        route.agent = std::move(hp).value();
      }
    } else if (k == "request_timeout" || k == "backend_timeout") {
      ConfigResult<milliseconds> d = route_duration(x);
      if (!d.ok()) {
        errors.at(x, "route." + k + ": " + d.error());
      } else {
        (k == "request_timeout" ? route.request_timeout : route.backend_timeout) = *d;
      }
    } else if (k == "private_deltas") {
      if (!x.is_boolean()) {
        errors.at(x, "route.private_deltas: expected true or false, got " + type_name(x));
        continue;
      }
      route.private_deltas = x.as_boolean();
    } else if (k == "agent_name") {
      if (!x.is_string()) {
        errors.at(x, "route.agent_name: expected a string, got " + type_name(x));
        continue;
      }
      ConfigResult<std::string> n = agent_name_value(x.as_string().str);
      if (!n.ok()) {
        errors.at(x, "route.agent_name: " + n.error());
      } else {
        route.agent_name = std::move(n).value();
        have_name = true;
      }
    } else {
      report_unknown("route." + k, x, known, errors);
    }
  }
  if (!have_hosts) errors.at(v, "route: needs hosts = [\"name\", \"*.suffix\"] or host = \"name\"");
  if (!have_agent) errors.at(v, "route: needs agent = \"HOST:PORT\"");
  if (have_agent && !have_name) route.agent_name = route.agent.host;
}

// Reads the file's [[route]] array into the draft, checking no host is routed twice.
bool read_routes(EdgeDraft& d, const std::string& key, const toml::value& v, Errors& errors) {
  if (key != "route") return false;
  if (!v.is_array()) {
    errors.at(v, "route: expected an array of tables ([[route]]), got " + type_name(v));
    return true;
  }
  const std::vector<std::string> known = known_names(edge_keys(), true);
  std::map<std::string, uint32_t> seen;  // pattern -> line of its route
  for (const toml::value& r : v.as_array()) {
    EdgeRoute route;
    read_route(r, known, route, errors);
    for (const std::string& h : route.hosts) {
      auto [it, fresh] = seen.emplace(h, r.location().line());
      if (!fresh) {
        errors.at(r, "route: host " + quote(h) + " is already routed by the route at line " +
                         std::to_string(it->second));
      }
    }
    d.cfg.routes.push_back(std::move(route));
  }
  return true;
}

void finish_edge(EdgeDraft& d, const std::map<std::string, Layer>& layers, Errors& errors) {
  const auto layer_of = [&](const char* key) {
    auto it = layers.find(key);
    return it == layers.end() ? Layer::kDefault : it->second;
  };
  if (d.agent) {
    std::string name = d.agent_name;
    // An agent_name from a lower level than agent names the address that agent replaced.
    if (name.empty() || layer_of("agent_name") < layer_of("agent")) name = d.agent->host;
    EdgeRoute route;  // Route options keep their defaults: the default route has no table.
    route.agent = *d.agent;
    route.agent_name = std::move(name);
    d.cfg.default_route = std::move(route);
  } else if (!d.agent_name.empty()) {
    errors.add("agent_name is set but agent is not; " + where_to_set("agent", "--agent"));
  }
  if (!d.cfg.default_route && d.cfg.routes.empty()) {
    errors.add(
        "no route to any agent: set --agent, COILGUN_AGENT or agent = in the config file, or add "
        "[[route]] tables");
  }
  if (d.cfg.tunnel.backoff_min > d.cfg.tunnel.backoff_max) {
    errors.add("tunnel.backoff_min (" + format_duration(d.cfg.tunnel.backoff_min) +
               ") must not exceed tunnel.backoff_max (" +
               format_duration(d.cfg.tunnel.backoff_max) + ")");
  }
  require_tls(d.cfg.tls, errors);
}

const std::vector<FlagDef>& edge_flags() {
  static const std::vector<FlagDef> flags = {
      {"--listen", "listen", "HOST:PORT", "Client HTTP listener HOST:PORT (default 0.0.0.0:8080)"},
      {"--agent", "agent", "HOST:PORT", "Agent HOST:PORT every Host is routed to"},
      {"--agent-name", "agent_name", "NAME",
       "Name the agent's certificate must carry (default: host of --agent)"},
      {"--admin", "admin", "HOST:PORT", "Admin listener HOST:PORT (default 127.0.0.1:9080)"},
      {"--tls-ca", "tls.ca", "FILE", "CA certificate (PEM) agents must be signed by"},
      {"--tls-cert", "tls.cert", "FILE", "This edge's client certificate (PEM)"},
      {"--tls-key", "tls.key", "FILE", "This edge's private key (PEM)"},
      {"--workers", "workers", "N|auto", "Worker loops: N (1..256) or auto (default auto)"},
      {"--log-level", "log.level", "LEVEL", "debug, info, warn or error (default info)"},
  };
  return flags;
}

// ---------------------------------------------------------------------------------------------
// Printing

template <typename D>
void print_keys(const std::vector<KeyDef<D>>& keys, const D& d, std::string& out) {
  std::string table;
  for (const KeyDef<D>& k : keys) {
    const size_t dot = k.key.find('.');
    const std::string t = dot == std::string::npos ? "" : k.key.substr(0, dot);
    const std::string name = dot == std::string::npos ? k.key : k.key.substr(dot + 1);
    if (t != table) {
      out += "\n[" + t + "]\n";
      table = t;
    }
    std::optional<std::string> v = k.print(d);
    if (!v) {
      out += "# " + name + " is not set\n";
    } else if (k.secret || is_secret_key(k.key)) {
      out += name + " = \"<redacted>\"\n";
    } else {
      out += name + " = " + *v + "\n";
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Public entry points

EnvMap environment_from(const char* const* envp) {
  EnvMap out;
  if (!envp) return out;
  for (; *envp; ++envp) {
    const std::string_view entry = *envp;
    if (!entry.starts_with("COILGUN_")) continue;
    const size_t eq = entry.find('=');
    if (eq == std::string_view::npos) continue;
    out.insert_or_assign(std::string(entry.substr(0, eq)), std::string(entry.substr(eq + 1)));
  }
  return out;
}

ConfigResult<Invocation<OriginConfig>> load_origin(int argc, const char* const* argv,
                                                   const EnvMap& env) {
  return load<OriginDraft, OriginConfig>(
      "coilgun-origin", "coilgun-origin: the Coilgun agent beside the web server", origin_flags(),
      origin_keys(), argc, argv, env, nullptr, finish_origin);
}

ConfigResult<Invocation<EdgeConfig>> load_edge(int argc, const char* const* argv,
                                               const EnvMap& env) {
  return load<EdgeDraft, EdgeConfig>(
      "coilgun-edge", "coilgun-edge: accepts clients and tunnels them to Coilgun agents",
      edge_flags(), edge_keys(), argc, argv, env, read_routes, finish_edge);
}

namespace {

// The file-only pipeline behind parse_*_toml().
template <typename D>
ConfigResult<D> parse_text(
    std::string_view text, std::string_view file_name, const std::vector<KeyDef<D>>& keys,
    const std::function<bool(D&, const std::string&, const toml::value&, Errors&)>& on_special,
    const std::function<void(D&, const std::map<std::string, Layer>&, Errors&)>& finish) {
  const std::string name(file_name);
  ConfigResult<toml::value> root = parse_toml(text, name);
  if (!root.ok()) return ConfigError{root.error()};
  D d;
  std::map<std::string, Layer> layers;
  Errors errors;
  errors.file = name;
  const std::vector<std::string> known = known_names(keys, static_cast<bool>(on_special));
  apply_file_table<D>(keys, *root, "", d, layers, errors, known,
                      [&](const std::string& key, const toml::value& v) {
                        return on_special && on_special(d, key, v, errors);
                      });
  if (errors.empty()) finish(d, layers, errors);
  if (!errors.empty()) return ConfigError{errors.text()};
  return d;
}

}  // namespace

ConfigResult<OriginConfig> parse_origin_toml(std::string_view text, std::string_view file_name) {
  ConfigResult<OriginDraft> d =
      parse_text<OriginDraft>(text, file_name, origin_keys(), nullptr, finish_origin);
  if (!d.ok()) return ConfigError{d.error()};
  return std::move(d->cfg);
}

ConfigResult<EdgeConfig> parse_edge_toml(std::string_view text, std::string_view file_name) {
  ConfigResult<EdgeDraft> d =
      parse_text<EdgeDraft>(text, file_name, edge_keys(), read_routes, finish_edge);
  if (!d.ok()) return ConfigError{d.error()};
  return std::move(d->cfg);
}

ConfigStatus check_files(const TlsConfig& tls) {
  std::vector<std::string> problems;
  const std::pair<const std::string*, const char*> files[] = {
      {&tls.ca, "tls.ca"}, {&tls.cert, "tls.cert"}, {&tls.key, "tls.key"}};
  for (const auto& [path, key] : files) {
    const std::string what = std::string(key) + " " + quote(*path);
    if (path->empty()) {
      problems.push_back(std::string(key) + " is not set");
      continue;
    }
    std::error_code ec;
    const auto st = std::filesystem::status(*path, ec);
    if (st.type() == std::filesystem::file_type::not_found ||
        ec == std::errc::no_such_file_or_directory) {
      problems.push_back(what + ": does not exist");
      continue;
    }
    if (ec) {
      problems.push_back(what + ": " + ec.message());
      continue;
    }
    if (!std::filesystem::is_regular_file(st)) {
      problems.push_back(what + ": not a regular file");
      continue;
    }
    std::FILE* f = std::fopen(path->c_str(), "rb");
    if (!f) {
      problems.push_back(what + ": cannot be read: " + std::strerror(errno));
      continue;
    }
    const bool empty = std::fgetc(f) == EOF;
    std::fclose(f);
    if (empty) problems.push_back(what + ": is empty");
  }
  if (!problems.empty()) return ConfigError{join_lines(problems)};
  return config_ok();
}

std::string to_toml(const OriginConfig& config) {
  std::string out = "# coilgun-origin effective configuration: every key, defaults included.\n";
  print_keys(origin_keys(), OriginDraft{config}, out);
  return out;
}

std::string to_toml(const EdgeConfig& config) {
  std::string out = "# coilgun-edge effective configuration: every key, defaults included.\n";
  EdgeDraft d{config, std::nullopt, ""};
  if (config.default_route) {
    d.agent = config.default_route->agent;
    d.agent_name = config.default_route->agent_name;
  }
  print_keys(edge_keys(), d, out);
  for (const EdgeRoute& r : config.routes) {
    out += "\n[[route]]\nhosts = [";
    for (size_t i = 0; i < r.hosts.size(); ++i) {
      out += (i ? ", " : "") + quote(r.hosts[i]);
    }
    out += "]\nagent = " + quote(r.agent.to_string()) + "\n";
    out += "agent_name = " + quote(r.agent_name) + "\n";
    if (r.request_timeout) {
      out += "request_timeout = " + quote(format_duration(*r.request_timeout)) + "\n";
    }
    if (r.backend_timeout) {
      out += "backend_timeout = " + quote(format_duration(*r.backend_timeout)) + "\n";
    }
    out += std::string("private_deltas = ") + (r.private_deltas ? "true" : "false") + "\n";
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Routing

namespace {

// |host| without port, brackets or trailing dot.
std::string_view route_host(std::string_view host) {
  host = trim(host);
  if (!host.empty() && host.front() == '[') {
    const size_t close = host.find(']');
    return close == std::string_view::npos ? host.substr(1) : host.substr(1, close - 1);
  }
  const size_t colon = host.find(':');
  if (colon != std::string_view::npos && host.find(':', colon + 1) == std::string_view::npos) {
    host = host.substr(0, colon);  // One colon: a port. More: a bare IPv6 literal.
  }
  if (!host.empty() && host.back() == '.') host.remove_suffix(1);
  return host;
}

// True when lower-cased |pattern| "*.suffix" matches |host| (any case): host ends in ".suffix"
// with at least one character before the dot.
bool wildcard_matches(std::string_view pattern, std::string_view host) {
  const std::string_view dot_suffix = pattern.substr(1);  // ".suffix"
  return host.size() > dot_suffix.size() &&
         iequals(host.substr(host.size() - dot_suffix.size()), dot_suffix);
}

}  // namespace

const EdgeRoute* match_route(const EdgeConfig& config, std::string_view host) {
  const std::string_view h = route_host(host);
  const EdgeRoute* best = nullptr;
  size_t best_len = 0;
  if (!h.empty()) {
    for (const EdgeRoute& r : config.routes) {
      for (const std::string& p : r.hosts) {
        if (p.starts_with("*.")) {
          if (p.size() > best_len && wildcard_matches(p, h)) {
            best = &r;
            best_len = p.size();
          }
        } else if (iequals(p, h)) {
          return &r;
        }
      }
    }
  }
  if (best) return best;
  return config.default_route ? &*config.default_route : nullptr;
}

}  // namespace coilgun::config
