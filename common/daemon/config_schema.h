#pragma once
// The machinery a daemon's configuration schema is written with (common/daemon/config.h has
// the rules an operator sees). A daemon describes its configuration once, as a Schema: a table
// of keys, each knowing how to set itself from a TOML value or from text (environment, flag)
// and how to print itself, plus its flags and a final whole-config check. From that one table
// come the file, the environment, the flags, --help and to_toml(). edge/config.cc and
// origin/config.cc are the two schemas; nothing else includes this header.
//
// A "draft" D is the configuration being built (its member `cfg`) plus anything not in the
// final struct (the edge keeps its default route's two keys apart until the end, because which
// agent_name applies depends on where each came from).
//
// Errors: a key's setter returns "" or why not, without location; the loader adds where the
// value came from (file:line, environment variable, flag). All errors of one load are reported
// together (Errors).
//
// Threads: as config.h; everything here is pure apart from read_file().

#include <chrono>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <toml.hpp>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/daemon/config.h"
#include "common/http/message.h"
#include "common/obs/log.h"

namespace coilgun::config {

// ---------------------------------------------------------------------------------------------
// Text helpers (defined in config.cc)

// |s| without leading and trailing blanks (space, tab, CR, LF).
std::string_view trim(std::string_view s);
// `"text"` with TOML basic-string escapes, for messages and for to_toml().
std::string quote(std::string_view s);
// ` (did you mean "x"?)` for the closest candidate within a small distance, else "".
std::string suggestion(std::string_view wrong, const std::vector<std::string>& candidates);
// Parses a run of decimal digits (the whole of |s|) into |out|; false when empty, not digits or
// above |max|.
bool parse_uint(std::string_view s, uint64_t max, uint64_t& out);
// |lines| joined with '\n'.
std::string join_lines(const std::vector<std::string>& lines);
// "" when |name| is a valid DNS name (letters, digits, '-', '_', dot-separated labels of 1..63
// characters, at most 253 in all), else why not. Case is not checked.
std::string dns_name_problem(std::string_view name);
// Checks and normalises a host without port: IPv4, [IPv6] (bare too when |allow_bare_ipv6|) or
// a DNS name (lower-cased).
ConfigResult<std::string> parse_host(std::string_view host, bool allow_bare_ipv6);

// ---------------------------------------------------------------------------------------------
// Values from one source

// A value from one source: the file (toml set) or the environment / a flag (text).
struct Raw {
  const toml::value* toml = nullptr;
  std::string_view text;
};

// Where a value came from; a later source overrides an earlier one.
enum class Layer : uint8_t { kDefault, kFile, kEnv, kFlag };
// The layer each dotted key was last set at (absent: kDefault).
using Layers = std::map<std::string, Layer>;

// "an integer", "a string": for type errors.
std::string type_name(const toml::value& v);
// The text of a string value (TOML string or env/flag text), or a type error.
ConfigResult<std::string> text_of(const Raw& raw, std::string_view expected);
// "must be between MIN and MAX, got V" (formatted as sizes when |sizes|).
std::string range_error(uint64_t min, uint64_t max, uint64_t got, bool sizes);
// Reads an integer: a TOML integer, or decimal text. Not range-checked beyond uint64.
ConfigResult<uint64_t> integer_of(const Raw& raw);
// Why duration |got| is outside [min, max]; max == milliseconds::max() means no upper bound.
std::string duration_range_error(milliseconds min, milliseconds max, milliseconds got);
// COILGUN_TUNNEL_PING_INTERVAL for "tunnel.ping_interval".
std::string env_name(std::string_view key);

// String checks for string_key(): a non-empty path; any path, "" for none.
ConfigResult<std::string> non_empty_path(std::string_view s);
ConfigResult<std::string> any_path(std::string_view s);

// The largest flow-control window a frame can express (proto/frame.h).
inline constexpr uint64_t kMaxWindow = 0x7fffffff;
inline constexpr uint64_t kMaxSize = std::numeric_limits<uint64_t>::max();

// ---------------------------------------------------------------------------------------------
// Keys

// One configuration key of draft type D.
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
        if (!t.ok()) return t.error().message;
        auto value = parse(*t);
        if (!value.ok()) return value.error().message;
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

// A list of addresses from the file: a TOML array of "HOST:PORT" strings, or one string
// "HOST:PORT" or "HOST:PORT,HOST:PORT" (parse_host_port_list's rules either way).
inline ConfigResult<std::vector<HostPort>> host_port_list_value(const toml::value& v) {
  if (v.is_string()) return parse_host_port_list(v.as_string().str);
  if (!v.is_array()) {
    return ConfigError{"expected a list like [\"10.0.0.5:11211\"], got " + type_name(v)};
  }
  std::string text;
  for (const toml::value& x : v.as_array()) {
    if (!x.is_string())
      return ConfigError{"expected strings like \"10.0.0.5:11211\", got " + type_name(x)};
    if (!text.empty()) text += ",";
    text += x.as_string().str;
  }
  return parse_host_port_list(text);
}

// A key holding a list of addresses: host_port_list_value() from the file, a comma list from
// the environment or a flag.
template <typename D, typename F>
KeyDef<D> host_port_list_key(std::string key, F field) {
  return make_key<D>(
      std::move(key),
      [field](D& d, const Raw& raw) -> std::string {
        ConfigResult<std::vector<HostPort>> list =
            raw.toml ? host_port_list_value(*raw.toml) : parse_host_port_list(raw.text);
        if (!list.ok()) return list.error().message;
        field(d) = std::move(list).value();
        return "";
      },
      [field](const D& d) -> std::optional<std::string> {
        if (field(d).empty()) return std::nullopt;  // "# KEY is not set": none, the default.
        std::string out = "[";
        for (const HostPort& a : field(d))
          out += (out.size() > 1 ? ", " : "") + quote(a.to_string());
        return out + "]";
      });
}

// A backend URL, http:// or https:// (parse_backend_url).
template <typename D, typename F>
KeyDef<D> backend_key(std::string key, F field) {
  return text_key<D>(
      std::move(key), field, "a string like \"http://127.0.0.1:8080\"",
      [](std::string_view text) { return parse_backend_url(text); },
      [](const BackendUrl& v) -> std::optional<std::string> {
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
          if (!r.ok()) return r.error().message;
          v = *r;
        } else {
          ConfigResult<std::string> t = text_of(raw, "a duration like \"10s\" or an integer");
          if (!t.ok()) return t.error().message;
          ConfigResult<milliseconds> r = parse_duration(*t);
          if (!r.ok()) return r.error().message;
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
          if (!r.ok()) return r.error().message;
          v = *r;
        } else {
          ConfigResult<std::string> t = text_of(raw, "a size like \"64KiB\" or an integer");
          if (!t.ok()) return t.error().message;
          ConfigResult<uint64_t> r = parse_size(*t);
          if (!r.ok()) return r.error().message;
          v = *r;
        }
        if (v < min || v > max) return range_error(min, max, v, /*sizes=*/true);
        field(d) = v;
        return "";
      },
      [field](const D& d) -> std::optional<std::string> {
        const std::string s = format_size(field(d));
        return (s.back() >= '0' && s.back() <= '9') ? s : quote(s);
      });
}

template <typename D, typename F>
KeyDef<D> int_key(std::string key, F field, int64_t min, int64_t max) {
  return make_key<D>(
      std::move(key),
      [field, min, max](D& d, const Raw& raw) -> std::string {
        ConfigResult<uint64_t> r = integer_of(raw);
        if (!r.ok()) return r.error().message;
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
          if (http::iequals(t, yes)) {
            field(d) = true;
            return "";
          }
        }
        for (std::string_view no : {"false", "0", "no", "off"}) {
          if (http::iequals(t, no)) {
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
        if (!t.ok()) return t.error().message;
        ConfigResult<uint16_t> w = parse_workers(*t);
        if (!w.ok()) return w.error().message;
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
        if (!t.ok()) return t.error().message;
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
// A field accessor for the key makers: COILGUN_CONFIG_FIELD(cfg.tunnel.ping_interval).
#define COILGUN_CONFIG_FIELD(expr) \
  [](auto& d) -> auto& { return d.expr; }

// [store]: the same keys in both daemons (config::StoreConfig).
template <typename D>
std::vector<KeyDef<D>> store_keys() {
  return {
      size_key<D>("store.max_bytes", COILGUN_CONFIG_FIELD(cfg.store.max_bytes), 1, kMaxSize),
      int_key<D>("store.versions_per_key", COILGUN_CONFIG_FIELD(cfg.store.versions_per_key), 1, 64),
      host_port_list_key<D>("store.memcached", COILGUN_CONFIG_FIELD(cfg.store.memcached)),
      duration_key<D>("store.memcached_timeout", COILGUN_CONFIG_FIELD(cfg.store.memcached_timeout),
                      milliseconds(1), milliseconds(10000)),
      duration_key<D>("store.memcached_index_fresh",
                      COILGUN_CONFIG_FIELD(cfg.store.memcached_index_fresh), milliseconds(0),
                      milliseconds(10000)),
      duration_key<D>("store.memcached_retry", COILGUN_CONFIG_FIELD(cfg.store.memcached_retry),
                      milliseconds(100), milliseconds(3600 * 1000)),
      size_key<D>("store.memcached_max_item", COILGUN_CONFIG_FIELD(cfg.store.memcached_max_item),
                  1024, 1024 * kMiB),
      string_key<D>("store.memcached_username", COILGUN_CONFIG_FIELD(cfg.store.memcached_username),
                    any_path),
      string_key<D>("store.memcached_password_file",
                    COILGUN_CONFIG_FIELD(cfg.store.memcached_password_file), any_path),
  };
}

// ---------------------------------------------------------------------------------------------
// Collecting errors

// Errors of one load: those from the file carry a line and are sorted by it.
struct Errors {
  std::string file;
  std::vector<std::pair<uint32_t, std::string>> located;
  std::vector<std::string> other;

  // An error at |v|'s line of the file.
  void at(const toml::value& v, const std::string& message);
  // An error with no line (environment, flags, whole-config checks).
  void add(std::string message) { other.push_back(std::move(message)); }
  bool empty() const { return located.empty() && other.empty(); }
  // Every error, one per line: the file's by line, then the others in order.
  std::string text();
};

// Where an operator can set |key|, for "is not set" errors.
std::string where_to_set(std::string_view key, std::string_view flag);

// Reports each of tls.ca, tls.cert and tls.key that is not set.
void require_tls(const TlsConfig& tls, Errors& errors);

// Reports |v| (found under dotted |key|) and, if it is a non-empty table, every key inside it,
// as unknown; |known| feeds the "did you mean" hint.
void report_unknown(const std::string& key, const toml::value& v,
                    const std::vector<std::string>& known, Errors& errors);

// ---------------------------------------------------------------------------------------------
// A daemon's schema

// One command-line option that sets a key.
struct FlagDef {
  const char* flag;  // "--listen"
  const char* key;   // "listen"
  const char* type;  // "HOST:PORT", shown in --help.
  const char* help;
  // Given more than once, the values join with ',' (a list key); otherwise the last one counts.
  bool repeat = false;
};

template <typename D>
struct Schema {
  const char* program;      // "coilgun-edge"
  const char* description;  // The first line of --help.
  std::vector<FlagDef> flags;
  std::vector<KeyDef<D>> keys;
  // Root keys of the file the key table does not hold (the edge's [[route]] array): returns
  // false when it does not know |key| either. May be empty.
  std::function<bool(D&, const std::string& key, const toml::value&, Errors&)> special;
  // Dotted names |special| reads ("route.hosts"...), for "did you mean" hints.
  std::vector<std::string> special_names;
  // Whole-config checks, run once every source is applied and no key had an error.
  std::function<void(D&, const Layers&, Errors&)> finish;
};

// The key named |key|, or null.
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
// The file

// Every dotted name |schema| knows, for "did you mean" hints.
template <typename D>
std::vector<std::string> known_names(const Schema<D>& schema) {
  std::vector<std::string> out;
  for (const KeyDef<D>& k : schema.keys) out.push_back(k.key);
  out.insert(out.end(), schema.special_names.begin(), schema.special_names.end());
  return out;
}

// Applies every key of |table| (the file's root or one of its tables, named |prefix|) to |d|.
// |on_special| handles root keys the table does not know (the edge's routes); returns false
// when it does not know them either.
template <typename D>
void apply_file_table(
    const std::vector<KeyDef<D>>& keys, const toml::value& table, const std::string& prefix, D& d,
    Layers& layers, Errors& errors, const std::vector<std::string>& known,
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

// ---------------------------------------------------------------------------------------------
// Loading

// Reads |path| whole, or explains why not.
// The bytes of the file at |path|, |what| naming it in errors ("config file"); more than
// |max_bytes| is an error.
ConfigResult<std::string> read_file(const std::string& path,
                                    const std::string& what = "config file",
                                    size_t max_bytes = size_t{64} << 20);

// Parses TOML |text| named |file_name|; errors read "file:line: message". Text that is not
// UTF-8, holds control characters or nests deeper than toml11 survives is refused before
// toml11 sees it (see config_schema.cc).
ConfigResult<toml::value> parse_toml(std::string_view text, const std::string& file_name);

// Applies the file's root table to |d|, handing root keys the table does not know to
// schema.special.
template <typename D>
void apply_root(const Schema<D>& schema, const toml::value& root, D& d, Layers& layers,
                Errors& errors) {
  const std::vector<std::string> known = known_names(schema);
  apply_file_table<D>(schema.keys, root, "", d, layers, errors, known,
                      [&](const std::string& key, const toml::value& v) {
                        return schema.special && schema.special(d, key, v, errors);
                      });
}

// Applies every COILGUN_* variable the table knows; others become warnings.
template <typename D>
void apply_env(const std::vector<KeyDef<D>>& keys, const EnvMap& env, D& d, Layers& layers,
               Errors& errors, std::vector<std::string>& warnings) {
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

// What the command line said, before any key is applied.
struct CommandLine {
  bool help = false;
  bool version = false;
  bool check = false;
  bool print_config = false;
  std::string help_text;    // Always filled in.
  std::string config_path;  // -c; "" when not given.
  // Per FlagDef, in order: the value given, or nullopt.
  std::vector<std::optional<std::string>> values;
};

// Parses argv against -c, |flags| and the one-shot flags (CLI11). Errors name |program|.
ConfigResult<CommandLine> parse_command_line(const char* program, const char* description,
                                             const std::vector<FlagDef>& flags, int argc,
                                             const char* const* argv);

// The whole load: command line, file (from -c, else COILGUN_CONFIG), environment, flags, then
// schema.finish; config.h gives the rules.
template <typename D, typename Config = decltype(D::cfg)>
ConfigResult<Invocation<Config>> load(const Schema<D>& schema, int argc, const char* const* argv,
                                      const EnvMap& env) {
  ConfigResult<CommandLine> cl =
      parse_command_line(schema.program, schema.description, schema.flags, argc, argv);
  if (!cl.ok()) return cl.error();
  Invocation<Config> inv;
  inv.help = cl->help;
  inv.version = cl->version;
  inv.check = cl->check;
  inv.print_config = cl->print_config;
  inv.help_text = cl->help_text;
  if (inv.help || inv.version) return inv;

  inv.config_path = cl->config_path;
  if (inv.config_path.empty()) {
    if (auto it = env.find("COILGUN_CONFIG"); it != env.end()) inv.config_path = it->second;
  }
  D d;
  Layers layers;
  Errors errors;
  if (!inv.config_path.empty()) {
    ConfigResult<std::string> text = read_file(inv.config_path);
    if (!text.ok()) return text.error();
    ConfigResult<toml::value> root = parse_toml(*text, inv.config_path);
    if (!root.ok()) return root.error();
    errors.file = inv.config_path;
    apply_root(schema, *root, d, layers, errors);
  }
  apply_env(schema.keys, env, d, layers, errors, inv.warnings);
  for (size_t i = 0; i < schema.flags.size(); ++i) {
    if (!cl->values[i]) continue;
    const KeyDef<D>* def = find_key(schema.keys, schema.flags[i].key);
    if (std::string why = def->set(d, Raw{nullptr, *cl->values[i]}); !why.empty()) {
      errors.add(std::string(schema.flags[i].flag) + ": " + why);
    } else {
      layers[def->key] = Layer::kFlag;
    }
  }
  if (errors.empty()) schema.finish(d, layers, errors);
  if (!errors.empty()) return ConfigError{errors.text()};
  inv.config = std::move(d.cfg);
  return inv;
}

// The file alone: TOML |text| named |file_name| over the defaults, then schema.finish.
template <typename D, typename Config = decltype(D::cfg)>
ConfigResult<Config> parse_text(const Schema<D>& schema, std::string_view text,
                                std::string_view file_name) {
  const std::string name(file_name);
  ConfigResult<toml::value> root = parse_toml(text, name);
  if (!root.ok()) return root.error();
  D d;
  Layers layers;
  Errors errors;
  errors.file = name;
  apply_root(schema, *root, d, layers, errors);
  if (errors.empty()) schema.finish(d, layers, errors);
  if (!errors.empty()) return ConfigError{errors.text()};
  return std::move(d.cfg);
}

// Appends every key of |keys| as TOML ("[table]" headers as they change), unset keys as
// comments, secret values redacted.
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

}  // namespace coilgun::config
