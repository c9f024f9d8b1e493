#pragma once
// Byte helpers for the wire codecs: big-endian integers, LEB128 varints, and a bounds-checked
// reader that never reads past its span (a short read is an error, not a crash).

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace coilgun::proto {

inline void put_u8(std::vector<uint8_t>& out, uint8_t v) { out.push_back(v); }
inline void put_u16(std::vector<uint8_t>& out, uint16_t v) {
  out.push_back(static_cast<uint8_t>(v >> 8));
  out.push_back(static_cast<uint8_t>(v));
}
inline void put_u24(std::vector<uint8_t>& out, uint32_t v) {
  out.push_back(static_cast<uint8_t>(v >> 16));
  out.push_back(static_cast<uint8_t>(v >> 8));
  out.push_back(static_cast<uint8_t>(v));
}
inline void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  put_u16(out, static_cast<uint16_t>(v >> 16));
  put_u16(out, static_cast<uint16_t>(v));
}
inline void put_u64(std::vector<uint8_t>& out, uint64_t v) {
  put_u32(out, static_cast<uint32_t>(v >> 32));
  put_u32(out, static_cast<uint32_t>(v));
}
// Unsigned LEB128: 7 bits per byte, low first, high bit set on all but the last byte.
inline void put_varint(std::vector<uint8_t>& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<uint8_t>(v | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<uint8_t>(v));
}
inline void put_bytes(std::vector<uint8_t>& out, std::span<const uint8_t> b) {
  out.insert(out.end(), b.begin(), b.end());
}
inline void put_bytes(std::vector<uint8_t>& out, std::string_view s) {
  out.insert(out.end(), s.begin(), s.end());
}

inline uint16_t get_u16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
inline uint32_t get_u24(const uint8_t* p) {
  return (uint32_t{p[0]} << 16) | (uint32_t{p[1]} << 8) | p[2];
}
inline uint32_t get_u32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}
// Little-endian, for formats defined that way (zstd's magic number).
inline uint32_t get_u32_le(const uint8_t* p) {
  return (uint32_t{p[3]} << 24) | (uint32_t{p[2]} << 16) | (uint32_t{p[1]} << 8) | p[0];
}
inline uint64_t get_u64(const uint8_t* p) { return (uint64_t{get_u32(p)} << 32) | get_u32(p + 4); }

// Reads forward through a span. Every read checks the bytes are there; after a failed read
// ok() is false and every later read fails too, so a parser can read a whole structure and
// check once at the end.
class ByteReader {
 public:
  explicit ByteReader(std::span<const uint8_t> in) : in_(in) {}

  bool ok() const { return ok_; }
  size_t remaining() const { return ok_ ? in_.size() - at_ : 0; }
  bool empty() const { return remaining() == 0; }

  uint8_t u8() { return need(1) ? in_[at_++] : 0; }
  uint16_t u16() { return need(2) ? advance(2, get_u16(&in_[at_])) : 0; }
  uint32_t u32() { return need(4) ? advance(4, get_u32(&in_[at_])) : 0; }
  uint64_t u64() { return need(8) ? advance(8, get_u64(&in_[at_])) : 0; }

  // A varint of at most |max_bytes| bytes (10 covers 64 bits); longer is an error.
  uint64_t varint(int max_bytes = 10) {
    uint64_t v = 0;
    for (int i = 0; i < max_bytes && ok_; ++i) {
      const uint8_t b = u8();
      v |= uint64_t{b & 0x7fu} << (7 * i);
      if ((b & 0x80) == 0) return v;
    }
    ok_ = false;
    return 0;
  }

  // The next |n| bytes, as a view into the input.
  std::span<const uint8_t> bytes(size_t n) {
    if (!need(n)) return {};
    std::span<const uint8_t> s = in_.subspan(at_, n);
    at_ += n;
    return s;
  }
  std::span<const uint8_t> rest() { return bytes(remaining()); }

 private:
  bool need(size_t n) {
    if (ok_ && in_.size() - at_ >= n) return true;
    ok_ = false;
    return false;
  }
  template <typename T>
  T advance(size_t n, T v) {
    at_ += n;
    return v;
  }

  std::span<const uint8_t> in_;
  size_t at_ = 0;
  bool ok_ = true;
};

inline std::string_view as_string_view(std::span<const uint8_t> b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}
inline std::span<const uint8_t> as_bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace coilgun::proto
