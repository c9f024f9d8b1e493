#pragma once
// Writing HTTP/1.1 messages (RFC 9112), and the Date field's value (RFC 9110 §5.6.7). No I/O.
//
// Writing
//   Writers append to a std::vector<uint8_t> the caller owns, the sink type every encoder in
//   Coilgun uses. They write what they are given: framing fields (Content-Length,
//   Transfer-Encoding) are the caller's choice. They refuse, and append nothing, when a
//   name is not a token or a value holds CR, LF, NUL or another control character, so no
//   input can ever inject a line into a message.
//
// Threads: the free functions touch nothing but their arguments and may be called from any
// thread; a DateCache belongs to one thread at a time.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/http/message.h"
#include "proto/status.h"

namespace coilgun::http {

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

// |unix_seconds| as an IMF-fixdate (RFC 9110 §5.6.7), "Sun, 06 Nov 1994 08:49:37 GMT": the
// only form a sender may generate for Date. Touches no clock and no locale.
std::string imf_fixdate(int64_t unix_seconds);

// The Date field value of the current second, formatted once per second (RFC 9110 §6.6.1: an
// origin server with a clock MUST send Date; a proxy adds one when a response lacks it). The
// caller reads the clock and passes the time in. One per thread (it is not thread-safe).
class DateCache {
 public:
  // The IMF-fixdate of |unix_seconds|. The view is valid until the next call.
  std::string_view get(int64_t unix_seconds);

 private:
  int64_t second_ = INT64_MIN;  // No second formatted yet.
  std::string text_;
};

}  // namespace coilgun::http
