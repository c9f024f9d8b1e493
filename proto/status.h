#pragma once
// Status and Result: how Coilgun reports errors without exceptions.
//
// Success costs nothing (one byte compared). An error carries a code, a static message (never
// freed, never formatted on the data path), where it came from and whether retrying the same
// operation can help. Foreign errors (libuv, OpenSSL, zstd) are converted once, where they
// enter, into one of these.

#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>

namespace coilgun {

// What went wrong. Codes are stable: they appear in logs and metrics labels (see name()).
enum class Code : uint8_t {
  kOk = 0,
  kMalformed,    // Bytes do not follow the format they claim.
  kTooLarge,     // A length, count or size is over its configured limit.
  kUnsupported,  // A version, type or feature this build does not speak.
  kBaseNotHeld,  // A delta names a base version the decoder does not hold.
  kCorrupt,      // A compressed payload fails to decode or fails its checksum.
  kIdMismatch,   // A decoded body does not hash to the version id it claims.
  kProtocol,     // A peer broke the protocol's rules (state, ordering, flow control).
  kNotFound,     // A requested item does not exist.
  kClosed,       // The connection or stream is gone.
  kTimeout,      // A deadline passed.
  kRefused,      // A peer refused the connection or the request.
  kIo,           // The operating system reported an error.
  kTls,          // TLS handshake or record error.
  kConfig,       // Configuration is invalid.
  kInternal,     // A bug: an invariant of our own did not hold.
};

// Who the error is about; used to choose status codes and log fields.
enum class Side : uint8_t { kInternal, kDownstream, kUpstream, kTunnel };

// Returns a short stable name such as "too_large" for metrics and logs.
const char* code_name(Code code);

class [[nodiscard]] Status {
 public:
  constexpr Status() = default;
  constexpr Status(Code code, const char* message, Side side = Side::kInternal,
                   bool retryable = false)
      : code_(code), side_(side), retryable_(retryable), message_(message) {}

  static constexpr Status Ok() { return Status(); }

  constexpr bool ok() const { return code_ == Code::kOk; }
  constexpr Code code() const { return code_; }
  constexpr Side side() const { return side_; }
  constexpr bool retryable() const { return retryable_; }
  // A static string that lives for the whole program; "" on success.
  constexpr const char* message() const { return message_; }

  // Returns a copy attributed to |side| (used when an error crosses a boundary).
  constexpr Status from(Side side) const {
    Status s = *this;
    s.side_ = side;
    return s;
  }

  // For logs and tests: "too_large: frame longer than the limit".
  std::string to_string() const;

 private:
  Code code_ = Code::kOk;
  Side side_ = Side::kInternal;
  bool retryable_ = false;
  const char* message_ = "";
};

// A value or an error. T must be default-constructible and movable. E is the error type: a
// Status on the data path; configuration uses config::ConfigError, whose text names file, line
// and key. E must be default-constructible to "no error" and say which it is with ok().
template <typename T, typename E = Status>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design.
  Result(E error) : error_(std::move(error)) {}  // NOLINT: implicit by design.

  bool ok() const { return error_.ok(); }
  // The error; E's "no error" when ok().
  const E& error() const { return error_; }
  // The error as a Status, where E is one.
  const Status& status() const requires std::is_same_v<E, Status> { return error_; }
  // The value; meaningful only when ok().
  T& value() & { return value_; }
  const T& value() const& { return value_; }
  T&& value() && { return std::move(value_); }
  T* operator->() { return &value_; }
  const T* operator->() const { return &value_; }
  T& operator*() & { return value_; }
  const T& operator*() const& { return value_; }

 private:
  static_assert(std::is_default_constructible_v<T>);
  E error_{};
  T value_{};
};

}  // namespace coilgun

// Returns early from the enclosing function when |expr| yields an error Status.
#define COILGUN_TRY(expr)                    \
  do {                                       \
    ::coilgun::Status coilgun_s_ = (expr);   \
    if (!coilgun_s_.ok()) return coilgun_s_; \
  } while (0)
