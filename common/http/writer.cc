#include "common/http/writer.h"

#include <chrono>
#include <cstdio>

namespace coilgun::http {

namespace {

constexpr char kHexDigits[] = "0123456789abcdef";

void append(std::vector<uint8_t>& out, std::string_view s) {
  out.insert(out.end(), s.begin(), s.end());
}

void append_hex(std::vector<uint8_t>& out, uint64_t n) {
  char buf[16];
  size_t len = 0;
  do {
    buf[sizeof(buf) - 1 - len] = kHexDigits[n & 0xf];
    n >>= 4;
    ++len;
  } while (n != 0);
  out.insert(out.end(), buf + sizeof(buf) - len, buf + sizeof(buf));
}

void append_decimal(std::vector<uint8_t>& out, unsigned n) {
  char buf[10];
  size_t len = 0;
  do {
    buf[sizeof(buf) - 1 - len] = static_cast<char>('0' + n % 10);
    n /= 10;
    ++len;
  } while (n != 0);
  out.insert(out.end(), buf + sizeof(buf) - len, buf + sizeof(buf));
}

Status check_fields(std::span<const Header> fields) {
  for (const Header& h : fields) {
    if (!is_token(h.name)) return Status(Code::kMalformed, "http: field name is not a token");
    if (!is_valid_field_value(h.value)) {
      return Status(Code::kMalformed, "http: field value holds CR, LF, NUL or a control");
    }
  }
  return Status::Ok();
}

void append_fields(std::vector<uint8_t>& out, std::span<const Header> fields) {
  for (const Header& h : fields) {
    append(out, h.name);
    append(out, ": ");
    append(out, h.value);
    append(out, kCrlf);
  }
}
}  // namespace

// ---------------------------------------------------------------------------------------------
// Writers.

Status write_request_head(const RequestHead& head, std::vector<uint8_t>& out) {
  if (!is_token(head.method)) return Status(Code::kMalformed, "http: method is not a token");
  if (!is_valid_target(head.target)) {
    return Status(Code::kMalformed, "http: invalid request-target");
  }
  if (head.version_minor != 0 && head.version_minor != 1) {
    return Status(Code::kMalformed, "http: version is not HTTP/1.0 or HTTP/1.1");
  }
  COILGUN_TRY(check_fields(head.headers));
  append(out, head.method);
  append(out, " ");
  append(out, head.target);
  append(out, head.version_minor == 1 ? " HTTP/1.1\r\n" : " HTTP/1.0\r\n");
  append_fields(out, head.headers);
  append(out, kCrlf);
  return Status::Ok();
}

Status write_response_head(const ResponseHead& head, std::vector<uint8_t>& out) {
  if (head.status < 100 || head.status > 599) {
    return Status(Code::kMalformed, "http: status code outside 100..599");
  }
  if (!is_valid_field_value(head.reason)) {
    return Status(Code::kMalformed, "http: reason phrase holds CR, LF, NUL or a control");
  }
  if (head.version_minor != 0 && head.version_minor != 1) {
    return Status(Code::kMalformed, "http: version is not HTTP/1.0 or HTTP/1.1");
  }
  COILGUN_TRY(check_fields(head.headers));
  append(out, head.version_minor == 1 ? "HTTP/1.1 " : "HTTP/1.0 ");
  append_decimal(out, static_cast<unsigned>(head.status));
  append(out, " ");
  append(out, head.reason.empty() ? status_reason(head.status) : std::string_view(head.reason));
  append(out, kCrlf);
  append_fields(out, head.headers);
  append(out, kCrlf);
  return Status::Ok();
}

void write_chunk_header(uint64_t size, std::vector<uint8_t>& out) {
  if (size == 0) return;
  append_hex(out, size);
  append(out, kCrlf);
}

void write_chunk(std::span<const uint8_t> data, std::vector<uint8_t>& out) {
  if (data.empty()) return;
  write_chunk_header(data.size(), out);
  out.insert(out.end(), data.begin(), data.end());
  append(out, kCrlf);
}

Status write_last_chunk(std::span<const Header> trailers, std::vector<uint8_t>& out) {
  COILGUN_TRY(check_fields(trailers));
  append(out, "0\r\n");
  append_fields(out, trailers);
  append(out, kCrlf);
  return Status::Ok();
}
// ---------------------------------------------------------------------------------------------
// Date.

std::string imf_fixdate(int64_t unix_seconds) {
  // IMF-fixdate = day-name "," SP date1 SP time-of-day SP GMT (RFC 9110 §5.6.7).
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  using namespace std::chrono;
  const sys_seconds time{seconds{unix_seconds}};
  const sys_days day = floor<days>(time);
  const year_month_day date{day};
  const hh_mm_ss clock{time - day};
  char text[64];
  std::snprintf(text, sizeof(text), "%s, %02u %s %04d %02d:%02d:%02d GMT",
                kDays[weekday{day}.c_encoding()], static_cast<unsigned>(date.day()),
                kMonths[static_cast<unsigned>(date.month()) - 1], static_cast<int>(date.year()),
                static_cast<int>(clock.hours().count()), static_cast<int>(clock.minutes().count()),
                static_cast<int>(clock.seconds().count()));
  return text;
}

std::string_view DateCache::get(int64_t unix_seconds) {
  if (unix_seconds != second_) {
    text_ = imf_fixdate(unix_seconds);
    second_ = unix_seconds;
  }
  return text_;
}

}  // namespace coilgun::http
