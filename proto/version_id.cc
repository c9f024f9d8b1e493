#include "proto/version_id.h"

#include <xxhash.h>

namespace coilgun::proto {

VersionId VersionId::of(std::span<const uint8_t> body) {
  XXH128_hash_t h = XXH3_128bits(body.data(), body.size());
  return VersionId{h.high64, h.low64};
}

void VersionId::to_bytes(uint8_t out[16]) const {
  for (int i = 0; i < 8; ++i) {
    out[i] = static_cast<uint8_t>(hi >> (56 - 8 * i));
    out[8 + i] = static_cast<uint8_t>(lo >> (56 - 8 * i));
  }
}

VersionId VersionId::from_bytes(const uint8_t in[16]) {
  VersionId id;
  for (int i = 0; i < 8; ++i) {
    id.hi = (id.hi << 8) | in[i];
    id.lo = (id.lo << 8) | in[8 + i];
  }
  return id;
}

std::string VersionId::to_hex() const {
  static const char kDigits[] = "0123456789abcdef";
  uint8_t bytes[16];
  to_bytes(bytes);
  std::string s(32, '0');
  for (int i = 0; i < 16; ++i) {
    s[2 * i] = kDigits[bytes[i] >> 4];
    s[2 * i + 1] = kDigits[bytes[i] & 15];
  }
  return s;
}

}  // namespace coilgun::proto
