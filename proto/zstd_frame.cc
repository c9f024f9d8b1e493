#include "proto/zstd_frame.h"

#include "proto/bytes.h"

namespace coilgun::proto {

Result<uint64_t> single_frame_size(std::span<const uint8_t> frame) {
  if (frame.size() < 4 || get_u32_le(frame.data()) != ZSTD_MAGICNUMBER) {
    return Status(Code::kMalformed, "not a zstd frame");
  }
  if (ZSTD_findFrameCompressedSize(frame.data(), frame.size()) != frame.size()) {
    return Status(Code::kMalformed, "payload is not exactly one zstd frame");
  }
  const unsigned long long size = ZSTD_getFrameContentSize(frame.data(), frame.size());
  if (size == ZSTD_CONTENTSIZE_ERROR) return Status(Code::kMalformed, "not a zstd frame");
  if (size == ZSTD_CONTENTSIZE_UNKNOWN) {
    return Status(Code::kMalformed, "zstd frame does not declare its size");
  }
  if (size > (frame.size() / 3 + 1) * uint64_t{ZSTD_BLOCKSIZE_MAX}) {
    return Status(Code::kMalformed, "zstd frame claims more than it can hold");
  }
  return uint64_t{size};
}

}  // namespace coilgun::proto
