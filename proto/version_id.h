#pragma once
// VersionId: the name of one version of a body, XXH3-128 of its bytes.
//
// Both daemons name versions by this id: the edge tells the agent which ids it holds, the agent
// answers with a delta against one of them, and the edge checks the rebuilt body against the
// new id before it serves a byte. XXH3-128 is not a cryptographic hash: ids detect corruption
// and mix-ups between honest peers, which is all the tunnel (already authenticated) needs.

#include <cstdint>
#include <functional>
#include <span>
#include <string>

namespace coilgun::proto {

struct VersionId {
  uint64_t hi = 0;
  uint64_t lo = 0;

  // Hashes |body|. Any thread; reads |body| once at memory speed.
  static VersionId of(std::span<const uint8_t> body);

  // Big-endian, 16 bytes: the wire form.
  void to_bytes(uint8_t out[16]) const;
  static VersionId from_bytes(const uint8_t in[16]);

  // 32 lowercase hex digits, for logs.
  std::string to_hex() const;

  bool is_zero() const { return hi == 0 && lo == 0; }
  friend bool operator==(const VersionId&, const VersionId&) = default;
};

struct VersionIdHash {
  size_t operator()(const VersionId& id) const noexcept { return static_cast<size_t>(id.lo); }
};

}  // namespace coilgun::proto
