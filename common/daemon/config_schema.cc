#include "common/daemon/config_schema.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <sstream>

namespace coilgun::config {

// ---------------------------------------------------------------------------------------------
// Values from one source

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

std::string env_name(std::string_view key) {
  std::string out = "COILGUN_";
  for (char c : key) {
    if (c == '.') c = '_';
    out += (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c;
  }
  return out;
}

ConfigResult<std::string> non_empty_path(std::string_view s) {
  if (s.empty()) return ConfigError{"must not be empty"};
  return std::string(s);
}

// Any path, or "" for none (the default).
ConfigResult<std::string> any_path(std::string_view s) { return std::string(s); }

// Why duration |got| is outside [min, max]; max == milliseconds::max() means no upper bound.
std::string duration_range_error(milliseconds min, milliseconds max, milliseconds got) {
  if (max == milliseconds::max()) {
    return "must be at least " + format_duration(min) + ", got " + format_duration(got);
  }
  return "must be between " + format_duration(min) + " and " + format_duration(max) + ", got " +
         format_duration(got);
}

// ---------------------------------------------------------------------------------------------
// Collecting errors

void Errors::at(const toml::value& v, const std::string& message) {
  located.emplace_back(v.location().line(),
                       file + ":" + std::to_string(v.location().line()) + ": " + message);
}

std::string Errors::text() {
  std::stable_sort(located.begin(), located.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::string> lines;
  for (auto& l : located) lines.push_back(l.second);
  for (auto& o : other) lines.push_back(o);
  return join_lines(lines);
}

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

// ---------------------------------------------------------------------------------------------
// Loading

// Reads |path| whole, or explains why not.
ConfigResult<std::string> read_file(const std::string& path, const std::string& what,
                                    size_t max_bytes) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return ConfigError{path + ": is a directory, not a " + what};
  }
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return ConfigError{path + ": cannot open " + what + ": " + std::strerror(errno)};
  std::string out;
  char buf[8192];
  size_t n = 0;
  while (out.size() <= max_bytes && (n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) return ConfigError{path + ": cannot read " + what};
  if (out.size() > max_bytes)
    return ConfigError{path + ": " + what + " larger than " + std::to_string(max_bytes) + " bytes"};
  return out;
}

namespace {

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
      if (c == '\\' && quote == '"')
        ++i;  // An escape: the next byte is not a quote.
      else if (c == quote)
        quote = 0;
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

}  // namespace

// Turns toml11's exceptions into "file:line: message" with its source excerpt.
ConfigResult<toml::value> parse_toml(std::string_view text, const std::string& file_name) {
  if (const Refusal r = check_document(text); r.line != 0) {
    return ConfigError{file_name + ":" + std::to_string(r.line) +
                       ": not a TOML document: " + r.why};
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
    // A bare word where a value goes is most often a string left unquoted (issue #14).
    if (const size_t at = what.find("unknown value appeared"); at != std::string::npos) {
      what.insert(at + std::strlen("unknown value appeared"),
                  " (strings are quoted in TOML: workers = \"auto\", not workers = auto)");
    }
    return ConfigError{file_name + ":" + std::to_string(e.location().line()) + ": " + what};
  } catch (const std::exception& e) {
    return ConfigError{file_name + ": " + e.what()};
  }
}

ConfigResult<CommandLine> parse_command_line(const char* program, const char* description,
                                             const std::vector<FlagDef>& flags, int argc,
                                             const char* const* argv) {
  CommandLine out;
  CLI::App app{description, program};
  app.set_help_flag();  // Our own --help below: recognised, not thrown.
  app.add_option("-c,--config", out.config_path, "TOML config file (or COILGUN_CONFIG)")
      ->type_name("FILE");
  // A repeat flag is read as a list (CLI11 keeps each occurrence) whose values join; of any
  // other the last counts. (A list option would also take "[a,b]" apart: not for the others.)
  std::vector<std::string> values(flags.size());
  std::vector<std::vector<std::string>> lists(flags.size());
  std::vector<CLI::Option*> options;
  for (size_t i = 0; i < flags.size(); ++i) {
    CLI::Option* o = flags[i].repeat ? app.add_option(flags[i].flag, lists[i], flags[i].help)
                                     : app.add_option(flags[i].flag, values[i], flags[i].help)
                                           ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    options.push_back(o->type_name(flags[i].type));
  }
  app.add_flag("--check", out.check, "Validate the config and certificates, then exit 0 or 1");
  app.add_flag("--print-config", out.print_config,
               "Print the effective configuration (TOML, secrets redacted), then exit");
  app.add_flag("--version", out.version, "Print the version and exit");
  app.add_flag("-h,--help", out.help, "Print this help and exit");
  app.footer(
      "Precedence: flag > COILGUN_* environment > config file > default.\n"
      "Every config key K can be set with COILGUN_<K>, dots as underscores, upper case,\n"
      "e.g. COILGUN_TUNNEL_PING_INTERVAL=5s.\n");
  out.help_text = app.help();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // No program name: whoever prints the error puts it first (it was there twice).
    return ConfigError{std::string(e.what()) + " (see --help)"};
  }
  for (size_t i = 0; i < flags.size(); ++i) {
    if (options[i]->count() == 0) {
      out.values.push_back(std::nullopt);
    } else if (!flags[i].repeat) {
      out.values.push_back(values[i]);
    } else {
      std::string joined;
      for (const std::string& v : lists[i]) joined += (joined.empty() ? "" : ",") + v;
      out.values.push_back(std::move(joined));
    }
  }
  return out;
}

}  // namespace coilgun::config
