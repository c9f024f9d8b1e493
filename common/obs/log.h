#pragma once
// Logging: one JSON object per line, on stderr by default.
//
//   log::info("tunnel up", {{"peer", peer_name}, {"rtt_ms", 1.25}});
//
// writes
//
//   {"ts":"2026-11-22T05:12:03.123Z","level":"info","msg":"tunnel up","peer":"a","rtt_ms":1.25}
//
// and the access log writes one line per request (see AccessRecord):
//
//   {"ts":"...","type":"access","method":"GET","host":"example.com","path":"/","status":200,...}
//
// Application lines carry "level"; access lines carry "type":"access" instead, so
// `jq 'select(.type == "access")'` splits them.
//
// Every line is valid JSON whatever the input: strings are escaped, control characters become
// escapes, invalid UTF-8 becomes U+FFFD, non-finite doubles become null. The keys "ts",
// "level", "msg" and "type" are the logger's own: fields must not reuse them.
//
// Threads: every function here may be called from any thread. A line is formatted in a
// per-thread buffer and written with one write(2) under a process-wide mutex, so lines from
// different threads never interleave and a rotating reopen() never loses or splits a line.
// Writing blocks the calling thread for the write(2): keep debug logging off the hot path in
// production. Logging never throws and never allocates once a thread's buffer has grown to
// its usual line length (nlohmann::json field values excepted).

#include <atomic>
#include <chrono>
#include <concepts>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "proto/status.h"

namespace coilgun::log {

// Severity, lowest first. A line is written if its level is at least the minimum level.
enum class Level : uint8_t { kDebug, kInfo, kWarn, kError };

// Returns "debug", "info", "warn" or "error".
const char* level_name(Level level);

// Parses "debug", "info", "warn" (or "warning") or "error", as written in the config file.
// Returns kConfig for anything else.
Result<Level> parse_level(std::string_view text);

namespace detail {
// The minimum level; read with relaxed loads. Use set_level() and enabled().
extern std::atomic<Level> g_min_level;
}  // namespace detail

// Sets the minimum level (initially kInfo). Any thread, at any time (a SIGHUP reload).
void set_level(Level level);

// The current minimum level.
Level level();

// True if a line at |level| would be written: one relaxed atomic load. Check it before
// computing an expensive field value.
inline bool enabled(Level level) {
  return level >= detail::g_min_level.load(std::memory_order_relaxed);
}

// One field value: a string, an integer, a double, a bool, null or a JSON value. A Value only
// refers to its string or JSON: it is meant to live inside one logging call's argument list,
// where temporaries outlive the call. Cheap to build (no allocation, no formatting).
class Value {
 public:
  enum class Kind : uint8_t { kNull, kString, kInt, kUint, kDouble, kBool, kJson };

  Value(std::nullptr_t)
      : kind_(Kind::kNull), u_(0) {}  // NOLINT: implicit by design (all of these).
  Value(std::string_view s) : kind_(Kind::kString), s_(s) {}    // NOLINT
  Value(const std::string& s) : kind_(Kind::kString), s_(s) {}  // NOLINT
  // A null pointer is logged as null.
  Value(const char* s)  // NOLINT
      : kind_(s != nullptr ? Kind::kString : Kind::kNull), s_(s != nullptr ? s : "") {}
  Value(bool b) : kind_(Kind::kBool), b_(b) {}  // NOLINT
  template <std::signed_integral T>
  requires(!std::same_as<T, bool>) Value(T i) : kind_(Kind::kInt), i_(i) {}  // NOLINT
  template <std::unsigned_integral T>
  requires(!std::same_as<T, bool>) Value(T u) : kind_(Kind::kUint), u_(u) {}  // NOLINT
  template <std::floating_point T>
  Value(T d) : kind_(Kind::kDouble), d_(static_cast<double>(d)) {}  // NOLINT
  // Dumped as is (invalid UTF-8 in its strings replaced), e.g. a config section.
  Value(const nlohmann::json& j) : kind_(Kind::kJson), j_(&j) {}  // NOLINT

  Kind kind() const { return kind_; }
  // Appends this value as JSON to |out|.
  void append_json(std::string& out) const;

 private:
  Kind kind_;
  union {
    std::string_view s_;
    int64_t i_;
    uint64_t u_;
    double d_;
    bool b_;
    const nlohmann::json* j_;
  };
};

// One "key": value member of a line.
struct Field {
  std::string_view key;
  Value value;
};

// The extra members of a line, in order: {{"key", value}, ...}.
using Fields = std::initializer_list<Field>;

// Writes one line at |level| with |msg| and |fields| if |level| is enabled. Any thread.
void write(Level level, std::string_view msg, Fields fields = {});

// Shorthands for write(). The level check is inline; formatting happens only when enabled.
inline void debug(std::string_view msg, Fields fields = {}) {
  if (enabled(Level::kDebug)) {
    write(Level::kDebug, msg, fields);
  }
}
inline void info(std::string_view msg, Fields fields = {}) {
  if (enabled(Level::kInfo)) {
    write(Level::kInfo, msg, fields);
  }
}
inline void warn(std::string_view msg, Fields fields = {}) {
  if (enabled(Level::kWarn)) {
    write(Level::kWarn, msg, fields);
  }
}
inline void error(std::string_view msg, Fields fields = {}) {
  if (enabled(Level::kError)) {
    write(Level::kError, msg, fields);
  }
}

// ---------------------------------------------------------------------------------------------
// Access log.

// How a response body crossed the link.
enum class DeltaResult : uint8_t {
  kNone,    // No body crossed the link (error before the exchange, HEAD, 304, ...).
  kDelta,   // A zstd delta against a version the edge held.
  kFull,    // The whole body, zstd-compressed, buffered.
  kStream,  // Streamed through without buffering (too large, not delta-worthy).
  kDirect,  // Not over the link: the edge sent the request to the route's fallback URL.
};

// Returns "none", "delta", "full", "stream" or "direct".
const char* delta_result_name(DeltaResult result);

// One request, as the access log records it. Strings are views the caller keeps alive for the
// call. Both daemons write theirs with designated initializers, naming what they know; every
// member has a default, so what they leave out is left out of the line. Written, in this order, as:
// ts, type ("access"), method, host, path, status, body_bytes, link_bytes, delta, then stream when
// set, duration_ms, then upstream_ms, error, agent, client, protocol, user_agent and request_id
// when set.
struct AccessRecord {
  // When the request arrived. The default (the epoch) means "now, when written".
  std::chrono::system_clock::time_point ts{};
  std::string_view method;
  std::string_view host;
  // The request target as received: path and query.
  std::string_view path;
  // The status code sent downstream; 0 if none was (the connection was lost first).
  int status = 0;
  // Body bytes of the response as delivered (edge: to the client; origin: from the backend).
  uint64_t body_bytes = 0;
  // Bytes this exchange put on the tunnel, both directions, frame headers included.
  uint64_t link_bytes = 0;
  DeltaResult delta = DeltaResult::kNone;
  // Why a body streamed (delta "stream") instead of being delta-coded, where the writer knows:
  // "upgrade", "method", "not_text", "event_stream", "unbuffered", "private", "too_large",
  // "trickle". Empty leaves the member out.
  std::string_view stream;
  // Time from request arrival to the last response byte written, milliseconds.
  double duration_ms = 0;
  // Time spent waiting for the other side (edge: the agent; origin: the backend),
  // milliseconds; negative means unknown and leaves the member out.
  double upstream_ms = -1;
  // Why the exchange failed, e.g. "tunnel_lost" or a Code name; empty leaves the member out.
  std::string_view error;
  // Edge: the agent the request went to, or for a 502 "tunnel_down" the route's agents; empty
  // leaves the member out.
  std::string_view agent;
  // Edge: the client's address, its protocol ("HTTP/1.1") and User-Agent. Both daemons: the
  // request id (X-Request-ID) the backend received. Empty leaves each member out.
  std::string_view client;
  std::string_view protocol;
  std::string_view user_agent;
  std::string_view request_id;
};

// Keeps a warning that anyone can trigger at will (a stranger failing the TLS handshake, a
// flood refused at the door) from flooding the log: it is written at most once per
// |interval_ms|, with how many occurrences it stands for. Any thread.
//
//   if (uint64_t n = limiter.occurred(now_ms)) log::warn("tunnel refused", {{"count", n}});
class ReportLimiter {
 public:
  explicit ReportLimiter(uint64_t interval_ms = 1000) : interval_ms_(interval_ms) {}
  // Counts one occurrence at |now_ms| (a monotonic clock). Returns how many occurred since the
  // last report, this one included, when a report is due (the first occurrence, then at most
  // one per interval); else 0: do not log now.
  uint64_t occurred(uint64_t now_ms);

 private:
  const uint64_t interval_ms_;
  std::atomic<uint64_t> unreported_{0};
  std::atomic<uint64_t> next_report_ms_{0};
};

// Writes |record| and then |extra| fields as one access line, if the access log is on,
// whatever the minimum level. Durations print with microsecond precision. Any thread.
void access(const AccessRecord& record, Fields extra = {});

// Turns the access log on (the default) or off. Any thread, at any time.
void set_access_enabled(bool on);

// True if access() writes.
bool access_enabled();

// ---------------------------------------------------------------------------------------------
// Sink: where lines go. One sink for the process, shared by application and access lines.

// Sends lines to stderr (the default), closing any log file. Any thread.
void set_sink_stderr();

// Sends lines to the file at |path|, opened for appending (created with mode 0640 if missing),
// closing any earlier log file. On failure returns kIo and keeps the current sink. Any thread.
Status set_sink_file(std::string path);

// Closes and reopens the log file by its path, for log rotation (SIGUSR1: the rotator has
// renamed the file; lines written after this go to a new file at the path). Lines being
// written by other threads finish in the old file. A no-op returning Ok when the sink is not
// a file. On failure returns kIo and keeps writing to the old file. Any thread (not from a
// signal handler: call it from the loop that watches the signal).
Status reopen();

// Sends every line (complete, ending in '\n') to |sink| instead of a file descriptor; an
// empty function restores stderr. |sink| runs under the sink mutex, one line at a time; it
// must not log. For tests.
void set_sink_for_test(std::function<void(std::string_view line)> sink);

// Lines that could not be written (the file descriptor failed), since the process started.
uint64_t dropped_lines();

// ---------------------------------------------------------------------------------------------
// Helpers the logger is made of, public for other JSON and text writers (metrics, admin).

// Appends "YYYY-MM-DDTHH:MM:SS.mmmZ" (UTC, milliseconds, truncated) for |tp| to |out|.
void append_timestamp(std::string& out, std::chrono::system_clock::time_point tp);

// Appends |s| to |out| as a quoted JSON string: '"' and '\\' escaped, control characters and
// DEL as \b \f \n \r \t or \u00XX, each ill-formed UTF-8 sequence (maximal subpart, as in
// Unicode 15 §3.9 "U+FFFD Substitution of Maximal Subparts") as \ufffd. The result is always
// valid JSON and valid UTF-8.
void append_json_string(std::string& out, std::string_view s);

// Appends |s| to |out| with each ill-formed UTF-8 sequence replaced by U+FFFD (EF BF BD),
// nothing else changed.
void append_valid_utf8(std::string& out, std::string_view s);

// Appends |v| as a JSON number, or null if it is NaN or infinite: whole numbers below 10^15
// as integers ("1000000"), others in the shortest form that reads back exactly, %g style
// ("0.0005", "1e-05", "2.5e+20"). -0 prints as 0.
void append_json_double(std::string& out, double v);

}  // namespace coilgun::log
