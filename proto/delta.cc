#include "proto/delta.h"

#include "proto/bytes.h"
#include "proto/delta_matcher.h"
#include "proto/zstd_frame.h"

namespace coilgun::proto {
namespace {

// Bodies and bases shorter than this are coded in full: a delta cannot pay for its header.
constexpr size_t kMinDeltaInput = 64;

uint32_t window_log_for(size_t bytes) {
  uint32_t log = ZSTD_WINDOWLOG_MIN;
  while ((size_t{1} << log) < bytes) ++log;
  return log;
}

// Replaces |out| with the payload header alone; the frame is appended to it.
void write_header(DeltaKind kind, const VersionId* base, VersionId id, std::vector<uint8_t>& out) {
  out.resize(kind == DeltaKind::kDelta ? kDeltaHeaderDelta : kDeltaHeaderFull);
  out[0] = static_cast<uint8_t>(kind);
  size_t at = 1;
  if (kind == DeltaKind::kDelta) {
    base->to_bytes(&out[at]);
    at += 16;
  }
  id.to_bytes(&out[at]);
}

}  // namespace

// ---- PreparedBase -------------------------------------------------------------------------

PreparedBase::PreparedBase(std::span<const uint8_t> bytes)
    : PreparedBase(bytes, VersionId::of(bytes)) {}

PreparedBase::PreparedBase(std::span<const uint8_t> bytes, VersionId id) : bytes_(bytes), id_(id) {
  build_anchor_index(bytes_, table_, table_bits_);
}

// ---- DeltaEncoder -------------------------------------------------------------------------

struct DeltaEncoder::Zstd {
  CCtxPtr full{ZSTD_createCCtx()};
  CCtxPtr seq{ZSTD_createCCtx()};
  std::vector<ZSTD_Sequence> seqs;
  // zstd writes each frame here (room for the worst case), and only the bytes it wrote go to
  // the caller: sizing the payload itself for the worst case zeroed a body's worth of memory
  // for every few hundred bytes of delta, and left that capacity on every queued payload.
  std::vector<uint8_t> frame;

  // Room for a frame of a |body_size| body.
  std::span<uint8_t> frame_room(size_t body_size) {
    const size_t bound = ZSTD_compressBound(body_size);
    if (frame.size() < bound) frame.resize(bound);
    return frame;
  }
  // Appends the |size| bytes zstd wrote (or reports its error); gives back a large buffer.
  Status append_frame(size_t size, std::vector<uint8_t>& out) {
    if (ZSTD_isError(size)) return Status(Code::kInternal, "zstd compression failed");
    out.insert(out.end(), frame.begin(), frame.begin() + static_cast<long>(size));
    constexpr size_t kKeep = 8 << 20;
    if (frame.size() > kKeep) std::vector<uint8_t>().swap(frame);
    return Status::Ok();
  }
};

DeltaEncoder::DeltaEncoder(EncodeOptions options)
    : options_(options),
      zstd_(std::make_unique<Zstd>()),
      matcher_(std::make_unique<DeltaMatcher>()) {
  configure_sequence_cctx(zstd_->seq.get());
  // No frame checksum: the receiver checks XXH3-128 of the rebuilt body against the body id,
  // end to end; zstd's XXH64 over the same bytes cost a tenth of each daemon's CPU.
  ZSTD_CCtx_setParameter(zstd_->full.get(), ZSTD_c_checksumFlag, 0);
  ZSTD_CCtx_setParameter(zstd_->full.get(), ZSTD_c_contentSizeFlag, 1);
}

DeltaEncoder::~DeltaEncoder() = default;

Status DeltaEncoder::encode(const PreparedBase* base, std::span<const uint8_t> body,
                            VersionId body_id, std::vector<uint8_t>& out) {
  stats_ = EncodeStats{};
  stats_.body_bytes = body.size();
  if (body.size() > kMaxDeltaSpan) {
    return Status(Code::kTooLarge, "body too large for the delta codec");
  }
  Status s;
  if (base == nullptr || base->bytes().size() < kMinDeltaInput || body.size() < kMinDeltaInput ||
      base->bytes().size() + body.size() > kMaxDeltaSpan) {
    s = encode_full(body, body_id, out);
  } else {
    s = encode_matched_delta(*base, body, body_id, out);
  }
  stats_.payload_bytes = out.size();
  return s;
}

Status DeltaEncoder::encode_full(std::span<const uint8_t> body, VersionId body_id,
                                 std::vector<uint8_t>& out) {
  stats_.kind = DeltaKind::kFull;
  write_header(DeltaKind::kFull, nullptr, body_id, out);
  ZSTD_CCtx* c = zstd_->full.get();
  ZSTD_CCtx_reset(c, ZSTD_reset_session_only);
  ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, options_.full_level);
  const std::span<uint8_t> room = zstd_->frame_room(body.size());
  return zstd_->append_frame(ZSTD_compress2(c, room.data(), room.size(), body.data(), body.size()),
                             out);
}

Status DeltaEncoder::encode_matched_delta(const PreparedBase& base, std::span<const uint8_t> body,
                                          VersionId body_id, std::vector<uint8_t>& out) {
  std::vector<ZSTD_Sequence>& seqs = zstd_->seqs;
  const MatcherParams& params =
      options_.matcher ? *options_.matcher : matcher_params_for_effort(options_.effort);
  if (!matcher_->run(base, body, params, seqs)) {
    // New text: the base is not worth reading.
    stats_.matched_bytes = matcher_->matched_bytes();
    return encode_full(body, body_id, out);
  }
  stats_.matcher_used = true;
  stats_.matched_bytes = matcher_->matched_bytes();
  stats_.sequences = seqs.size();
  stats_.kind = DeltaKind::kDelta;

  const VersionId base_id = base.id();
  write_header(DeltaKind::kDelta, &base_id, body_id, out);
  ZSTD_CCtx* c = zstd_->seq.get();
  ZSTD_CCtx_reset(c, ZSTD_reset_session_only);
  // The base is not referenced here: with sequences given and validation off, zstd never reads
  // the prefix, only hashes it into tables nobody searches (4% of encode time). The window
  // log covers base + body, so the frame is byte-identical to one made with the prefix
  // referenced; tests/unit/proto/delta_test.cc holds zstd to that.
  ZSTD_CCtx_setParameter(c, ZSTD_c_windowLog,
                         static_cast<int>(window_log_for(base.bytes().size() + body.size())));
  const std::span<uint8_t> room = zstd_->frame_room(body.size());
  return zstd_->append_frame(ZSTD_compressSequences(c, room.data(), room.size(), seqs.data(),
                                                    seqs.size(), body.data(), body.size()),
                             out);
}

// ---- Parsing and decoding -----------------------------------------------------------------

Result<DeltaHeader> parse_delta(std::span<const uint8_t> payload) {
  if (payload.empty()) return Status(Code::kMalformed, "empty delta payload");
  DeltaHeader h;
  size_t at = 1;
  h.keep_as_base = (payload[0] & kKeepAsBase) != 0;
  const uint8_t kind = payload[0] & static_cast<uint8_t>(~kKeepAsBase);
  if (kind == static_cast<uint8_t>(DeltaKind::kFull)) {
    h.kind = DeltaKind::kFull;
  } else if (kind == static_cast<uint8_t>(DeltaKind::kDelta)) {
    h.kind = DeltaKind::kDelta;
  } else {
    return Status(Code::kMalformed, "unknown delta payload kind");
  }
  const size_t header = h.kind == DeltaKind::kDelta ? kDeltaHeaderDelta : kDeltaHeaderFull;
  if (payload.size() < header) return Status(Code::kMalformed, "delta payload header truncated");
  if (h.kind == DeltaKind::kDelta) {
    h.base = VersionId::from_bytes(&payload[at]);
    at += 16;
  }
  h.id = VersionId::from_bytes(&payload[at]);
  h.frame = payload.subspan(header);
  auto size = single_frame_size(h.frame);
  if (!size.ok()) return size.status();
  h.content_size = *size;
  return h;
}

struct DeltaDecoder::Zstd {
  DCtxPtr d{ZSTD_createDCtx()};
};

DeltaDecoder::DeltaDecoder() : zstd_(std::make_unique<Zstd>()) {}
DeltaDecoder::~DeltaDecoder() = default;

Status DeltaDecoder::decode(const DeltaHeader& header, std::optional<std::span<const uint8_t>> base,
                            size_t max_output, std::vector<uint8_t>& out) {
  out.clear();
  if (header.kind == DeltaKind::kDelta && !base) {
    return Status(Code::kBaseNotHeld, "delta against a base version not held");
  }
  if (header.content_size > max_output || header.content_size > kMaxDeltaSpan) {
    return Status(Code::kTooLarge, "decoded body would exceed the limit");
  }
  const size_t base_size = header.kind == DeltaKind::kDelta ? base->size() : 0;
  if (base_size > kMaxDeltaSpan) return Status(Code::kTooLarge, "base too large");

  // Memory is bounded by the declared size, checked above against the limit and against what
  // the frame's bytes can hold; one-shot decoding needs no window limit of its own.
  ZSTD_DCtx* d = zstd_->d.get();
  ZSTD_DCtx_reset(d, ZSTD_reset_session_only);
  if (header.kind == DeltaKind::kDelta &&
      ZSTD_isError(ZSTD_DCtx_refPrefix(d, base->data(), base->size()))) {
    return Status(Code::kInternal, "zstd refused the base");
  }
  out.resize(header.content_size);
  const size_t r =
      ZSTD_decompressDCtx(d, out.data(), out.size(), header.frame.data(), header.frame.size());
  if (ZSTD_isError(r) || r != header.content_size) {
    out.clear();
    return Status(Code::kCorrupt, "delta frame does not decode");
  }
  if (!(VersionId::of(out) == header.id)) {
    out.clear();
    return Status(Code::kIdMismatch, "decoded body does not match its version id");
  }
  return Status::Ok();
}

}  // namespace coilgun::proto
