#pragma once
// Checks on a zstd frame a peer sent, before anything is allocated for its content: shared by
// the delta codec (delta.h) and the header blocks (headers.h), which both decode one frame in
// one shot into a buffer of the size the frame declares.

#include <zstd.h>

#include <cstdint>
#include <memory>
#include <span>

#include "proto/c_deleter.h"
#include "proto/status.h"

namespace coilgun::proto {

using CCtxPtr = std::unique_ptr<ZSTD_CCtx, CDeleter<ZSTD_freeCCtx>>;
using DCtxPtr = std::unique_ptr<ZSTD_DCtx, CDeleter<ZSTD_freeDCtx>>;

// The content size |frame| declares, if it is exactly one current-format zstd frame (no legacy
// formats, which libzstd still decodes with older, less hardened code; no skippable or
// trailing frames) that declares its size, and no larger than its bytes could produce (a
// block costs at least 3 bytes and yields at most ZSTD_BLOCKSIZE_MAX). kMalformed otherwise.
Result<uint64_t> single_frame_size(std::span<const uint8_t> frame);

}  // namespace coilgun::proto
