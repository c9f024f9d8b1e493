#include "common/daemon/config.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <sstream>

#include "common/daemon/config_schema.h"
#include "common/http/message.h"

namespace coilgun::config {

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

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

}  // namespace

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

namespace {

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

}  // namespace

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

namespace {

bool looks_numeric(std::string_view s) {
  return !s.empty() &&
         std::all_of(s.begin(), s.end(), [](char c) { return is_digit(c) || c == '.'; });
}

}  // namespace

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
    if (!http::is_ipv6_address(host)) return ConfigError{"invalid IPv6 address " + quote(host)};
    return to_lower(host);
  }
  if (host.find(':') != std::string_view::npos) {
    if (allow_bare_ipv6 && http::is_ipv6_address(host)) return to_lower(host);
    return ConfigError{"invalid host " + quote(host)};
  }
  if (looks_numeric(host)) {
    if (!http::is_ipv4_address(host)) return ConfigError{"invalid IPv4 address " + quote(host)};
    return std::string(host);
  }
  if (host.back() == '.') host.remove_suffix(1);  // A fully qualified name's root dot.
  if (std::string problem = dns_name_problem(host); !problem.empty()) {
    return ConfigError{problem};
  }
  return to_lower(host);
}

std::string join_lines(const std::vector<std::string>& lines) {
  std::string out;
  for (const std::string& l : lines) {
    if (!out.empty()) out += '\n';
    out += l;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Value types

bool HostPort::is_ipv6() const { return host.find(':') != std::string::npos; }

std::string HostPort::to_string() const {
  std::string h = is_ipv6() ? "[" + host + "]" : host;
  return h + ":" + std::to_string(port);
}

ConfigResult<std::vector<HostPort>> parse_host_port_list(std::string_view text) {
  std::vector<HostPort> out;
  std::string_view rest = trim(text);
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    ConfigResult<HostPort> one = parse_host_port(rest.substr(0, comma));
    if (!one.ok()) return one.error();
    if (one->port == 0) return ConfigError{"address " + quote(one->to_string()) + ": port 0"};
    if (std::find(out.begin(), out.end(), *one) != out.end()) {
      return ConfigError{"address " + quote(one->to_string()) + " is listed twice"};
    }
    out.push_back(std::move(one).value());
    if (out.size() > 64) return ConfigError{"more than 64 addresses"};
    if (comma == std::string_view::npos) break;
    rest = trim(rest.substr(comma + 1));
    if (rest.empty()) return ConfigError{"a trailing ',' with no address after it"};
  }
  return out;
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
  if (!h.ok()) return ConfigError{"address " + quote(t) + ": " + h.error().message};
  return HostPort{std::move(h).value(), static_cast<uint16_t>(p)};
}

std::string BackendUrl::to_string() const {
  return (https ? "https://" : "http://") + HostPort{host, port}.to_string();
}

ConfigResult<BackendUrl> parse_backend_url(std::string_view text) {
  const std::string_view t = trim(text);
  constexpr std::string_view kHttp = "http://", kHttps = "https://";
  const bool https = t.size() >= kHttps.size() && iequals(t.substr(0, kHttps.size()), kHttps);
  if (!https && (t.size() < kHttp.size() || !iequals(t.substr(0, kHttp.size()), kHttp))) {
    return ConfigError{"backend " + quote(t) + " is not a URL of the form http(s)://HOST:PORT"};
  }
  std::string_view rest = t.substr(https ? kHttps.size() : kHttp.size());
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
  if (!has_port) with_port += https ? ":443" : ":80";
  ConfigResult<HostPort> hp = parse_host_port(with_port);
  if (!hp.ok()) return ConfigError{"backend " + quote(t) + ": " + hp.error().message};
  if (hp->port == 0) return ConfigError{"backend " + quote(t) + ": port 0 is not a valid port"};
  return BackendUrl{hp->host, hp->port, https};
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
  if (k.ends_with("_file")) return false;  // Where a secret is, not the secret.
  return k.find("password") != std::string::npos || k.find("token") != std::string::npos;
}

// ---------------------------------------------------------------------------------------------
// Loading

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

ConfigResult<std::string> memcached_password(const StoreConfig& store) {
  const std::string& user = store.memcached_username;
  const std::string& file = store.memcached_password_file;
  if (user.empty() && file.empty()) return std::string();
  if (file.empty())
    return ConfigError{"store.memcached_username is set but store.memcached_password_file is not"};
  if (user.empty())
    return ConfigError{"store.memcached_password_file is set but store.memcached_username is not"};
  ConfigResult<std::string> read = read_file(file, "password file", 1024);
  if (!read.ok()) return ConfigError{"store.memcached_password_file: " + read.error().message};
  std::string password = std::move(read).value();
  if (password.ends_with('\n')) password.pop_back();
  if (password.ends_with('\r')) password.pop_back();
  if (password.empty()) return ConfigError{"store.memcached_password_file: " + file + ": empty"};
  return password;
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

}  // namespace coilgun::config
