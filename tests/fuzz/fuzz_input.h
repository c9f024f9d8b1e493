#pragma once
// Splits a fuzz input into parts: a 2-byte big-endian length, that many bytes, the rest.

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>

namespace coilgun::fuzz {

inline std::pair<std::span<const uint8_t>, std::span<const uint8_t>> split(const uint8_t* data,
                                                                           size_t size) {
  if (size < 2) return {{}, {data, size}};
  size_t first = (size_t{data[0]} << 8) | data[1];
  if (first > size - 2) first = size - 2;
  return {{data + 2, first}, {data + 2 + first, size - 2 - first}};
}

}  // namespace coilgun::fuzz
