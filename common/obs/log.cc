#include "common/obs/log.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <ctime>
#include <mutex>
#include <system_error>
#include <utility>

namespace coilgun::log {

namespace detail {
std::atomic<Level> g_min_level{Level::kInfo};
}  // namespace detail

namespace {

std::atomic<bool> g_access_enabled{true};
std::atomic<uint64_t> g_dropped_lines{0};

// A thread's line buffer keeps its capacity between lines, unless a huge line grew it past
// this; then it is released so one odd line does not pin memory in every thread.
constexpr size_t kKeepBufferBytes = size_t{64} * 1024;
// How long a write may wait for a non-blocking descriptor to drain before the line is dropped.
constexpr int kWriteWaitMs = 1000;

// Where lines go. Created once and never destroyed, so that logging from static destructors
// and detached threads stays safe at exit.
struct Sink {
  std::mutex mutex;
  int fd = STDERR_FILENO;  // Guarded by mutex.
  bool own_fd = false;     // fd is a log file we opened. Guarded by mutex.
  std::string path;        // The log file's path when own_fd. Guarded by mutex.
  std::function<void(std::string_view)> test_sink;  // Guarded by mutex.
};

Sink& sink() {
  static Sink* const s = new Sink();
  return *s;
}

// Writes all of |line| to |fd|, retrying on EINTR and short writes and waiting (bounded) on
// EAGAIN. Returns false if the descriptor failed. Requires the sink mutex.
bool write_all(int fd, std::string_view line) {
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n >= 0) {
      p += n;
      left -= static_cast<size_t>(n);
      continue;
    }
    if (errno == EINTR) {
      continue;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      pollfd pfd{fd, POLLOUT, 0};
      if (::poll(&pfd, 1, kWriteWaitMs) > 0) {
        continue;
      }
    }
    return false;
  }
  return true;
}

// Hands one complete line to the sink.
void emit(std::string_view line) {
  Sink& s = sink();
  std::lock_guard lock(s.mutex);
  if (s.test_sink) {
    s.test_sink(line);
    return;
  }
  if (!write_all(s.fd, line)) {
    g_dropped_lines.fetch_add(1, std::memory_order_relaxed);
  }
}

// Opens |path| for appending. Returns the descriptor or -1.
int open_log_file(const std::string& path) {
  int fd;
  do {
    fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  } while (fd < 0 && errno == EINTR);
  return fd;
}

// The per-thread line buffer, emptied.
std::string& line_buffer() {
  thread_local std::string buf;
  buf.clear();
  return buf;
}

// Writes |buf| (a line without its newline), then trims the buffer if it grew too large.
void finish_line(std::string& buf) {
  buf += '\n';
  emit(buf);
  if (buf.capacity() > kKeepBufferBytes) {
    std::string().swap(buf);
  }
}

// Appends ,"key": to |out|.
void append_key(std::string& out, std::string_view key) {
  out += ',';
  append_json_string(out, key);
  out += ':';
}

void append_fields(std::string& out, Fields fields) {
  for (const Field& f : fields) {
    append_key(out, f.key);
    f.value.append_json(out);
  }
}

template <typename Int>
void append_int(std::string& out, Int v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof(buf), v);
  out.append(buf, r.ptr);
}

// Appends |v| with three decimals (microseconds when |v| is in milliseconds), or null.
void append_fixed3(std::string& out, double v) {
  if (!std::isfinite(v)) {
    out += "null";
    return;
  }
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::fixed, 3);
  if (r.ec != std::errc()) {
    append_json_double(out, v);
    return;
  }
  out.append(buf, r.ptr);
}

// Length of the well-formed UTF-8 sequence at the start of |s| (non-empty), or 0 if it is
// ill-formed; then |*bad| is the length of the maximal subpart to replace (at least 1).
// Table 3-7 of the Unicode standard: the second byte's range depends on the first.
size_t utf8_sequence(std::string_view s, size_t* bad) {
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char b0 = byte(0);
  if (b0 < 0x80) {
    return 1;
  }
  if (b0 < 0xC2 || b0 > 0xF4) {  // A continuation byte, an overlong lead (C0, C1), or F5+.
    *bad = 1;
    return 0;
  }
  size_t need = 1;  // Continuation bytes.
  unsigned char lo = 0x80, hi = 0xBF;
  if (b0 >= 0xF0) {
    need = 3;
    lo = b0 == 0xF0 ? 0x90 : 0x80;  // No overlong forms.
    hi = b0 == 0xF4 ? 0x8F : 0xBF;  // Nothing above U+10FFFF.
  } else if (b0 >= 0xE0) {
    need = 2;
    lo = b0 == 0xE0 ? 0xA0 : 0x80;  // No overlong forms.
    hi = b0 == 0xED ? 0x9F : 0xBF;  // No surrogates.
  }
  if (s.size() < 2 || byte(1) < lo || byte(1) > hi) {
    *bad = 1;
    return 0;
  }
  for (size_t k = 2; k <= need; ++k) {
    if (k >= s.size() || (byte(k) & 0xC0) != 0x80) {
      *bad = k;
      return 0;
    }
  }
  return need + 1;
}

// Hex digits for \u escapes.
constexpr char kHex[] = "0123456789abcdef";

// True for bytes append_json_string copies as they are.
bool json_plain(unsigned char c) { return c >= 0x20 && c != '"' && c != '\\' && c < 0x7F; }

}  // namespace

const char* level_name(Level level) {
  switch (level) {
    case Level::kDebug:
      return "debug";
    case Level::kInfo:
      return "info";
    case Level::kWarn:
      return "warn";
    case Level::kError:
      return "error";
  }
  return "unknown";
}

Result<Level> parse_level(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  std::string lower(text);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower == "debug") return Level::kDebug;
  if (lower == "info") return Level::kInfo;
  if (lower == "warn" || lower == "warning") return Level::kWarn;
  if (lower == "error") return Level::kError;
  return Status(Code::kConfig, "log level must be debug, info, warn or error");
}

void set_level(Level level) { detail::g_min_level.store(level, std::memory_order_relaxed); }

Level level() { return detail::g_min_level.load(std::memory_order_relaxed); }

void Value::append_json(std::string& out) const {
  switch (kind_) {
    case Kind::kNull:
      out += "null";
      return;
    case Kind::kString:
      append_json_string(out, s_);
      return;
    case Kind::kInt:
      append_int(out, i_);
      return;
    case Kind::kUint:
      append_int(out, u_);
      return;
    case Kind::kDouble:
      append_json_double(out, d_);
      return;
    case Kind::kBool:
      out += b_ ? "true" : "false";
      return;
    case Kind::kJson:
      // The replace handler turns invalid UTF-8 into U+FFFD instead of throwing.
      out += j_->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      return;
  }
}

void write(Level level, std::string_view msg, Fields fields) {
  if (!enabled(level)) {
    return;
  }
  std::string& buf = line_buffer();
  buf += "{\"ts\":\"";
  append_timestamp(buf, std::chrono::system_clock::now());
  buf += "\",\"level\":\"";
  buf += level_name(level);
  buf += "\",\"msg\":";
  append_json_string(buf, msg);
  append_fields(buf, fields);
  buf += '}';
  finish_line(buf);
}

const char* delta_result_name(DeltaResult result) {
  switch (result) {
    case DeltaResult::kNone:
      return "none";
    case DeltaResult::kDelta:
      return "delta";
    case DeltaResult::kFull:
      return "full";
    case DeltaResult::kStream:
      return "stream";
    case DeltaResult::kDirect:
      return "direct";
  }
  return "unknown";
}

void access(const AccessRecord& record, Fields extra) {
  if (!access_enabled()) {
    return;
  }
  std::string& buf = line_buffer();
  buf += "{\"ts\":\"";
  append_timestamp(buf, record.ts == std::chrono::system_clock::time_point{}
                            ? std::chrono::system_clock::now()
                            : record.ts);
  buf += "\",\"type\":\"access\"";
  append_key(buf, "method");
  append_json_string(buf, record.method);
  append_key(buf, "host");
  append_json_string(buf, record.host);
  append_key(buf, "path");
  append_json_string(buf, record.path);
  append_key(buf, "status");
  append_int(buf, record.status);
  append_key(buf, "body_bytes");
  append_int(buf, record.body_bytes);
  append_key(buf, "link_bytes");
  append_int(buf, record.link_bytes);
  buf += ",\"delta\":\"";
  buf += delta_result_name(record.delta);
  buf += '"';
  if (!record.stream.empty()) {
    append_key(buf, "stream");
    append_json_string(buf, record.stream);
  }
  append_key(buf, "duration_ms");
  append_fixed3(buf, record.duration_ms);
  if (record.upstream_ms >= 0) {
    append_key(buf, "upstream_ms");
    append_fixed3(buf, record.upstream_ms);
  }
  const std::pair<const char*, std::string_view> optional[] = {
      {"error", record.error},           {"agent", record.agent},
      {"client", record.client},         {"protocol", record.protocol},
      {"user_agent", record.user_agent}, {"request_id", record.request_id}};
  for (const auto& [key, value] : optional) {
    if (value.empty()) continue;
    append_key(buf, key);
    append_json_string(buf, value);
  }
  append_fields(buf, extra);
  buf += '}';
  finish_line(buf);
}

void set_access_enabled(bool on) { g_access_enabled.store(on, std::memory_order_relaxed); }

bool access_enabled() { return g_access_enabled.load(std::memory_order_relaxed); }

void set_sink_stderr() {
  Sink& s = sink();
  std::lock_guard lock(s.mutex);
  if (s.own_fd) {
    ::close(s.fd);
  }
  s.fd = STDERR_FILENO;
  s.own_fd = false;
  s.path.clear();
  s.test_sink = nullptr;
}

Status set_sink_file(std::string path) {
  int fd = open_log_file(path);
  if (fd < 0) {
    return Status(Code::kIo, "cannot open the log file");
  }
  Sink& s = sink();
  std::lock_guard lock(s.mutex);
  if (s.own_fd) {
    ::close(s.fd);
  }
  s.fd = fd;
  s.own_fd = true;
  s.path = std::move(path);
  s.test_sink = nullptr;
  return Status::Ok();
}

Status reopen() {
  Sink& s = sink();
  std::lock_guard lock(s.mutex);
  if (!s.own_fd) {
    return Status::Ok();
  }
  int fd = open_log_file(s.path);
  if (fd < 0) {
    return Status(Code::kIo, "cannot reopen the log file");
  }
  ::close(s.fd);
  s.fd = fd;
  return Status::Ok();
}

void set_sink_for_test(std::function<void(std::string_view line)> test_sink) {
  if (!test_sink) {
    set_sink_stderr();
    return;
  }
  Sink& s = sink();
  std::lock_guard lock(s.mutex);
  if (s.own_fd) {
    ::close(s.fd);
  }
  s.fd = STDERR_FILENO;
  s.own_fd = false;
  s.path.clear();
  s.test_sink = std::move(test_sink);
}

uint64_t dropped_lines() { return g_dropped_lines.load(std::memory_order_relaxed); }

void append_timestamp(std::string& out, std::chrono::system_clock::time_point tp) {
  using std::chrono::duration_cast;
  using std::chrono::milliseconds;
  using std::chrono::seconds;
  const auto secs = std::chrono::floor<seconds>(tp);
  const auto ms = duration_cast<milliseconds>(tp - secs).count();
  const auto t = static_cast<time_t>(secs.time_since_epoch().count());

  // gmtime_r and its formatting run once per second per thread; lines in the same second
  // reuse the cached "YYYY-MM-DDTHH:MM:SS".
  thread_local time_t cached_t = 0;
  thread_local char cached[32] = "";
  thread_local size_t cached_len = 0;
  if (cached_len == 0 || cached_t != t) {
    std::tm tm{};
    if (gmtime_r(&t, &tm) == nullptr) {
      tm = std::tm{};
    }
    cached_len = std::strftime(cached, sizeof(cached), "%Y-%m-%dT%H:%M:%S", &tm);
    cached_t = t;
  }
  out.append(cached, cached_len);
  char frac[5] = {'.', static_cast<char>('0' + ms / 100), static_cast<char>('0' + ms / 10 % 10),
                  static_cast<char>('0' + ms % 10), 'Z'};
  out.append(frac, sizeof(frac));
}

void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  size_t i = 0;
  while (i < s.size()) {
    // Copy the longest run of plain ASCII in one go.
    size_t j = i;
    while (j < s.size() && json_plain(static_cast<unsigned char>(s[j]))) {
      ++j;
    }
    out.append(s.data() + i, j - i);
    i = j;
    if (i == s.size()) {
      break;
    }
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      switch (c) {
        case '"':
          out += "\\\"";
          break;
        case '\\':
          out += "\\\\";
          break;
        case '\b':
          out += "\\b";
          break;
        case '\f':
          out += "\\f";
          break;
        case '\n':
          out += "\\n";
          break;
        case '\r':
          out += "\\r";
          break;
        case '\t':
          out += "\\t";
          break;
        default: {  // Other control characters and DEL.
          const char esc[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 0xF]};
          out.append(esc, sizeof(esc));
          break;
        }
      }
      ++i;
      continue;
    }
    size_t bad = 0;
    const size_t len = utf8_sequence(s.substr(i), &bad);
    if (len > 0) {
      out.append(s.data() + i, len);
      i += len;
    } else {
      out += "\\ufffd";
      i += bad;
    }
  }
  out += '"';
}

void append_valid_utf8(std::string& out, std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    size_t j = i;
    while (j < s.size() && static_cast<unsigned char>(s[j]) < 0x80) {
      ++j;
    }
    out.append(s.data() + i, j - i);
    i = j;
    if (i == s.size()) {
      break;
    }
    size_t bad = 0;
    const size_t len = utf8_sequence(s.substr(i), &bad);
    if (len > 0) {
      out.append(s.data() + i, len);
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      i += bad;
    }
  }
}

void append_json_double(std::string& out, double v) {
  if (!std::isfinite(v)) {
    out += "null";
    return;
  }
  // Whole numbers print as integers ("1000000", not "1e+06"); others in the shortest form
  // that reads back exactly, in %g style ("0.0005", not "5e-04"; "1e-05").
  if (v == std::trunc(v) && std::fabs(v) < 1e15) {
    append_int(out, static_cast<int64_t>(v));
    return;
  }
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::general);
  out.append(buf, r.ptr);
}

uint64_t ReportLimiter::occurred(uint64_t now_ms) {
  unreported_.fetch_add(1, std::memory_order_relaxed);
  uint64_t next = next_report_ms_.load(std::memory_order_relaxed);
  if (now_ms < next) return 0;
  // One thread wins the report; occurrences counted meanwhile go into the next one.
  if (!next_report_ms_.compare_exchange_strong(next, now_ms + interval_ms_,
                                               std::memory_order_relaxed)) {
    return 0;
  }
  return unreported_.exchange(0, std::memory_order_relaxed);
}

}  // namespace coilgun::log
