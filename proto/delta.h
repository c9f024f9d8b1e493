#pragma once
// The delta codec: a body coded against a version the other side already holds.
//
// A payload is either a full body (plain zstd) or a delta: a zstd frame whose matches may
// reach into a base version used as a raw-content prefix (RFC 8878 §5: a raw-content
// dictionary precedes the frame's content, and offsets may reach into it while the output is
// within the window). Delta frames declare their content size and are single-segment, as
// zstd's own --patch-from frames are; any zstd 1.5 decoder given the base as a raw-content
// dictionary or prefix rebuilds the body (`zstd -d --patch-from=BASE` reads the frame part).
//
// Payload layout (all integers big-endian):
//
//   0        1                             17                            33
//   +--------+-----------------------------+-----------------------------+------------------+
//   | kind=1 | base id (XXH3-128, 16 B)    | body id (XXH3-128, 16 B)    | zstd frame ...   |
//   +--------+-----------------------------+-----------------------------+------------------+
//   | kind=0 | body id (16 B)              | zstd frame ...                                 |
//   +--------+-----------------------------+------------------------------------------------+
//
// Bit 7 of the kind byte, "keep as base", tells the receiver to store the rebuilt body as a
// version later payloads may be coded against (mark_keep_as_base sets it; the sender decides,
// see PROTOCOL.md §6). Bits 1..6 are zero.
//
// The encoder puts the content size in every frame, and no checksum: the body id (XXH3-128 of
// the body) already checks the result end to end, and zstd's XXH64 over the same bytes cost
// each daemon a tenth of its CPU (tests/bench/RESULTS.md). The decoder accepts exactly one
// current-format zstd frame that declares its size, refuses a size over the caller's limit
// (or beyond what the frame's bytes could produce) before it allocates, checks zstd's
// checksum when a frame has one, and checks the rebuilt body against the body id before it
// returns a byte.
//
// How the encoder is fast (the rest is in delta_matcher.h): the engine finds the long stretches
// the body shares with the base itself, with a sparse index of the base built once per base
// (PreparedBase), then spends an optimal parse only on the few bytes that changed, and hands
// zstd the finished sequences (ZSTD_compressSequences) for entropy coding. Stock zstd instead
// indexes every position of base and body on every call; that indexing, not the search, is
// what made levels that reach a good ratio slower than plain zstd -3 (tests/bench/RESULTS.md).

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "proto/status.h"
#include "proto/version_id.h"

namespace coilgun::proto {

enum class DeltaKind : uint8_t { kFull = 0, kDelta = 1 };
inline constexpr uint8_t kKeepAsBase = 0x80;  // Flag in the kind byte.

// Sets the "keep as base" flag of an encoded payload (not empty).
inline void mark_keep_as_base(std::vector<uint8_t>& payload) { payload[0] |= kKeepAsBase; }

inline constexpr size_t kDeltaHeaderFull = 1 + 16;
inline constexpr size_t kDeltaHeaderDelta = 1 + 16 + 16;
// Base plus body must fit zstd's largest window on 64-bit (2^31); we keep a margin.
inline constexpr size_t kMaxDeltaSpan = size_t{1} << 30;

// A base version indexed for the encoder. Building one reads the base once and writes a table
// of 2 to 4 bytes per base byte (a 32-bit slot for every 4th position, load factor at most
// 1/2). Immutable afterwards: many encoders on many threads may use one PreparedBase at once.
class PreparedBase {
 public:
  // |bytes| must stay valid and unchanged for the life of this object; the caller owns them
  // (the version store keeps the blob and its PreparedBase together). |id| must be
  // VersionId::of(bytes); pass it when already known to skip hashing.
  explicit PreparedBase(std::span<const uint8_t> bytes);
  PreparedBase(std::span<const uint8_t> bytes, VersionId id);

  std::span<const uint8_t> bytes() const { return bytes_; }
  VersionId id() const { return id_; }
  // Heap bytes this object holds (the index, not the base bytes).
  size_t index_bytes() const { return table_.size() * sizeof(uint32_t); }

 private:
  friend class DeltaMatcher;
  std::span<const uint8_t> bytes_;
  VersionId id_;
  std::vector<uint32_t> table_;  // Position + 1 of a sampled 8-byte gram, 0 = empty.
  int table_bits_ = 0;
};

// Knobs of the delta matcher (delta_matcher.h says what each step does). Each effort level
// has a set; tests/bench/RESULTS.md records how they trade ratio for speed.
struct MatcherParams {
  uint32_t min_anchor;        // Shortest match the anchor scan takes without parsing around it.
  uint32_t chain_depth;       // Body positions examined at each gap position.
  uint32_t sufficient;        // A match this long is taken at once, ending the parse window.
  uint32_t skip;              // Positions inside a match this long are not searched.
  uint32_t body_window;       // Body bytes before a gap that are indexed for the gap's matches.
  uint32_t max_parse_gap;     // Longer gaps (new content) get a greedy parse, not the optimal one.
  uint32_t parse_budget_pct;  // The optimal parse covers at most this share of the body.
};

// Tuning for the encoder. The defaults meet the targets in tests/bench/RESULTS.md.
struct EncodeOptions {
  // zstd level for full bodies and for deltas against a base too different to match cheaply.
  int full_level = 3;
  // Effort of the delta matcher, 1 (fastest) .. 9 (smallest). See delta_matcher.h.
  int effort = 5;
  // Replaces the effort level's matcher knobs when set (for tuning and tests).
  std::optional<MatcherParams> matcher;
};

// What the last encode did, for metrics, logs and the benchmark.
struct EncodeStats {
  DeltaKind kind = DeltaKind::kFull;
  bool matcher_used = false;  // false: coded in full (no base, too small, or too different).
  size_t body_bytes = 0;
  size_t matched_bytes = 0;  // Body bytes covered by long matches against the base.
  size_t sequences = 0;
  size_t payload_bytes = 0;
};

class DeltaMatcher;

// Encodes bodies. Holds zstd contexts and scratch buffers that are reused across calls, so
// keep one per worker thread. Not thread-safe.
class DeltaEncoder {
 public:
  explicit DeltaEncoder(EncodeOptions options = {});
  ~DeltaEncoder();
  DeltaEncoder(const DeltaEncoder&) = delete;
  DeltaEncoder& operator=(const DeltaEncoder&) = delete;

  // Replaces |out| with the payload for |body|, whose id is |body_id|. With |base| null the
  // payload is a full body; otherwise a delta against |base| (or a full body when the body is
  // too small to gain from one). Fails only with kTooLarge (base + body over kMaxDeltaSpan is
  // coded full instead, so that means body over kMaxDeltaSpan) or kInternal.
  Status encode(const PreparedBase* base, std::span<const uint8_t> body, VersionId body_id,
                std::vector<uint8_t>& out);

  const EncodeStats& last_stats() const { return stats_; }

 private:
  Status encode_full(std::span<const uint8_t> body, VersionId body_id, std::vector<uint8_t>& out);
  Status encode_matched_delta(const PreparedBase& base, std::span<const uint8_t> body,
                              VersionId body_id, std::vector<uint8_t>& out);

  struct Zstd;
  EncodeOptions options_;
  std::unique_ptr<Zstd> zstd_;
  std::unique_ptr<DeltaMatcher> matcher_;
  EncodeStats stats_;
};

// A parsed payload header. |frame| points into the payload passed to parse_delta and is valid
// as long as that payload is.
struct DeltaHeader {
  DeltaKind kind = DeltaKind::kFull;
  bool keep_as_base = false;  // The sender keeps this version as a base: store it too.
  VersionId base;             // Zero for kFull.
  VersionId id;
  uint64_t content_size = 0;  // The body's size, from the zstd frame header.
  std::span<const uint8_t> frame;
};

// Parses and checks a payload header, and reads the body size from the frame header without
// decompressing. Errors: kMalformed (short, unknown kind, not a zstd frame, size unknown).
Result<DeltaHeader> parse_delta(std::span<const uint8_t> payload);

// Decodes payloads. Holds a zstd context reused across calls; keep one per worker thread.
class DeltaDecoder {
 public:
  DeltaDecoder();
  ~DeltaDecoder();
  DeltaDecoder(const DeltaDecoder&) = delete;
  DeltaDecoder& operator=(const DeltaDecoder&) = delete;

  // Rebuilds the body of |header| into |out| (replacing its contents). For a delta, |base|
  // must hold the bytes of header.base (and must not point into |out|); std::nullopt means the
  // caller does not hold that base. Errors, each distinct:
  //   kBaseNotHeld  a delta whose base the caller does not hold;
  //   kTooLarge     the body would be larger than |max_output| (checked before allocating),
  //                 or the base is larger than kMaxDeltaSpan;
  //   kCorrupt      the frame does not decode, or fails zstd's checksum;
  //   kIdMismatch   the rebuilt body does not hash to header.id.
  // On error |out| holds no usable body.
  Status decode(const DeltaHeader& header, std::optional<std::span<const uint8_t>> base,
                size_t max_output, std::vector<uint8_t>& out);

 private:
  struct Zstd;
  std::unique_ptr<Zstd> zstd_;
};

}  // namespace coilgun::proto
