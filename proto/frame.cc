#include "proto/frame.h"

#include "proto/bytes.h"

namespace coilgun::proto {
namespace {

constexpr uint8_t kMaxType = static_cast<uint8_t>(FrameType::kGoaway);

Status malformed(const char* what) { return Status(Code::kMalformed, what, Side::kTunnel); }

// Checks what the 9-byte header alone can show, so a bad frame is refused before its payload
// is waited for or buffered.
Status check_header(FrameType type, uint8_t flags, uint32_t stream, uint32_t length) {
  const bool on_stream = stream != 0;
  switch (type) {
    case FrameType::kData:
      if (!on_stream) return malformed("DATA on stream 0");
      if (flags & ~kFlagEndStream) return malformed("DATA with unknown flags");
      return Status::Ok();
    case FrameType::kRequest:
      if (!on_stream) return malformed("REQUEST on stream 0");
      if (flags & ~kFlagEndStream) return malformed("REQUEST with unknown flags");
      if (length < 1) return malformed("REQUEST without a version count");
      return Status::Ok();
    case FrameType::kResponse:
      if (!on_stream) return malformed("RESPONSE on stream 0");
      if (flags & ~kFlagEndStream) return malformed("RESPONSE with unknown flags");
      if (length < 3) return malformed("RESPONSE shorter than status and body mode");
      return Status::Ok();
    case FrameType::kTrailers:
      if (!on_stream) return malformed("TRAILERS on stream 0");
      if (flags != 0) return malformed("TRAILERS with flags");
      return Status::Ok();
    case FrameType::kReset:
      if (!on_stream) return malformed("RESET on stream 0");
      if (flags != 0) return malformed("RESET with flags");
      if (length != 4) return malformed("RESET payload is not 4 bytes");
      return Status::Ok();
    case FrameType::kWindowUpdate:
      if (flags != 0) return malformed("WINDOW_UPDATE with flags");
      if (length != 4) return malformed("WINDOW_UPDATE payload is not 4 bytes");
      return Status::Ok();
    case FrameType::kPing:
      if (on_stream) return malformed("PING on a stream");
      if (flags & ~kFlagAck) return malformed("PING with unknown flags");
      if (length != 8) return malformed("PING payload is not 8 bytes");
      return Status::Ok();
    case FrameType::kSettings:
      if (on_stream) return malformed("SETTINGS on a stream");
      if (flags & ~kFlagAck) return malformed("SETTINGS with unknown flags");
      if ((flags & kFlagAck) && length != 0) return malformed("SETTINGS ACK with a payload");
      if (length % 6 != 0) return malformed("SETTINGS payload not a multiple of 6 bytes");
      if (length / 6 > kMaxSettings)
        return Status(Code::kTooLarge, "too many SETTINGS", Side::kTunnel);
      return Status::Ok();
    case FrameType::kGoaway:
      if (on_stream) return malformed("GOAWAY on a stream");
      if (flags != 0) return malformed("GOAWAY with flags");
      if (length < 8 || length > 8 + kMaxGoawayDebug) return malformed("GOAWAY payload size");
      return Status::Ok();
  }
  return Status(Code::kUnsupported, "unknown frame type", Side::kTunnel);
}

Status write_header(std::vector<uint8_t>& out, size_t length, FrameType type, uint8_t flags,
                    uint32_t stream) {
  if (length > kMaxFramePayloadLimit) return Status(Code::kTooLarge, "frame payload too large");
  if (stream > kMaxStreamId) return Status(Code::kMalformed, "stream id out of range");
  put_u24(out, static_cast<uint32_t>(length));
  put_u8(out, static_cast<uint8_t>(type));
  put_u8(out, flags);
  put_u32(out, stream);
  return Status::Ok();
}

Status need_stream(uint32_t stream) {
  if (stream == 0 || stream > kMaxStreamId)
    return Status(Code::kMalformed, "stream id out of range");
  return Status::Ok();
}

}  // namespace

const char* frame_type_name(FrameType type) {
  switch (type) {
    case FrameType::kData:
      return "DATA";
    case FrameType::kRequest:
      return "REQUEST";
    case FrameType::kResponse:
      return "RESPONSE";
    case FrameType::kTrailers:
      return "TRAILERS";
    case FrameType::kReset:
      return "RESET";
    case FrameType::kWindowUpdate:
      return "WINDOW_UPDATE";
    case FrameType::kPing:
      return "PING";
    case FrameType::kSettings:
      return "SETTINGS";
    case FrameType::kGoaway:
      return "GOAWAY";
  }
  return "UNKNOWN";
}

const char* reset_reason_name(ResetReason reason) {
  switch (reason) {
    case ResetReason::kCancel:
      return "cancel";
    case ResetReason::kRefused:
      return "refused";
    case ResetReason::kProtocol:
      return "protocol";
    case ResetReason::kFlowControl:
      return "flow_control";
    case ResetReason::kUpstreamFailed:
      return "upstream_failed";
    case ResetReason::kUpstreamTimeout:
      return "upstream_timeout";
    case ResetReason::kTooLarge:
      return "too_large";
    case ResetReason::kInternal:
      return "internal";
    case ResetReason::kBaseMissing:
      return "base_missing";
    case ResetReason::kUpstreamRefused:
      return "upstream_refused";
  }
  return "unknown";
}

bool Frame::end_stream() const {
  switch (type) {
    case FrameType::kData:
    case FrameType::kRequest:
    case FrameType::kResponse:
      return (flags & kFlagEndStream) != 0;
    case FrameType::kTrailers:
    case FrameType::kReset:
      return true;
    default:
      return false;
  }
}

Result<size_t> FrameDecoder::decode(std::span<const uint8_t> input, Frame& frame) const {
  if (input.size() < kFrameHeaderSize) return size_t{0};
  const uint32_t length = get_u24(&input[0]);
  const uint8_t type = input[3];
  const uint8_t flags = input[4];
  const uint32_t stream_word = get_u32(&input[5]);
  if (length > max_payload_) {
    return Status(Code::kTooLarge, "frame longer than the limit", Side::kTunnel);
  }
  if (type > kMaxType) return Status(Code::kUnsupported, "unknown frame type", Side::kTunnel);
  if (stream_word & 0x80000000u) return malformed("reserved stream id bit set");
  COILGUN_TRY(check_header(static_cast<FrameType>(type), flags, stream_word, length));
  if (input.size() < kFrameHeaderSize + length) return size_t{0};
  frame.type = static_cast<FrameType>(type);
  frame.flags = flags;
  frame.stream = stream_word;
  frame.payload = input.subspan(kFrameHeaderSize, length);
  return kFrameHeaderSize + length;
}

// ---- REQUEST / RESPONSE / DATA / TRAILERS -------------------------------------------------

Result<RequestHead> parse_request(const Frame& frame) {
  ByteReader r(frame.payload);
  const uint8_t count = r.u8();
  if (count > kMaxHeldVersions) {
    return Status(Code::kTooLarge, "REQUEST names too many versions", Side::kTunnel);
  }
  RequestHead head;
  head.held.reserve(count);
  for (uint8_t i = 0; i < count; ++i) {
    std::span<const uint8_t> id = r.bytes(16);
    if (!r.ok()) break;
    head.held.push_back(VersionId::from_bytes(id.data()));
  }
  if (!r.ok()) return malformed("REQUEST version ids truncated");
  head.header_block = r.rest();
  return head;
}

Status write_request(std::vector<uint8_t>& out, uint32_t stream, std::span<const VersionId> held,
                     std::span<const uint8_t> header_block, bool end_stream) {
  COILGUN_TRY(need_stream(stream));
  if (held.size() > kMaxHeldVersions) return Status(Code::kTooLarge, "too many held versions");
  const size_t length = 1 + 16 * held.size() + header_block.size();
  COILGUN_TRY(
      write_header(out, length, FrameType::kRequest, end_stream ? kFlagEndStream : 0, stream));
  put_u8(out, static_cast<uint8_t>(held.size()));
  for (const VersionId& id : held) {
    uint8_t b[16];
    id.to_bytes(b);
    put_bytes(out, std::span<const uint8_t>(b, 16));
  }
  put_bytes(out, header_block);
  return Status::Ok();
}

Result<ResponseHead> parse_response(const Frame& frame) {
  ByteReader r(frame.payload);
  ResponseHead head;
  head.status = r.u16();
  const uint8_t mode = r.u8();
  if (!r.ok()) return malformed("RESPONSE truncated");
  if (head.status < 100 || head.status > 999) return malformed("RESPONSE status out of range");
  if (mode > static_cast<uint8_t>(BodyMode::kStream)) return malformed("unknown body mode");
  head.mode = static_cast<BodyMode>(mode);
  if (is_interim_status(head.status)) {
    if (head.mode != BodyMode::kNone || frame.end_stream()) {
      return malformed("interim RESPONSE with a body or END_STREAM");
    }
  } else if (head.mode == BodyMode::kNone && !frame.end_stream()) {
    return malformed("RESPONSE without a body must end the stream");
  }
  head.header_block = r.rest();
  return head;
}

Status write_response(std::vector<uint8_t>& out, uint32_t stream, uint16_t status, BodyMode mode,
                      std::span<const uint8_t> header_block, bool end_stream) {
  COILGUN_TRY(need_stream(stream));
  if (status < 100 || status > 999) return Status(Code::kMalformed, "status out of range");
  if (is_interim_status(status)) {
    if (mode != BodyMode::kNone || end_stream) {
      return Status(Code::kMalformed,
                    "an interim response has no body and does not end the stream");
    }
  } else if (mode == BodyMode::kNone && !end_stream) {
    return Status(Code::kMalformed, "a response without a body must end the stream");
  }
  COILGUN_TRY(write_header(out, 3 + header_block.size(), FrameType::kResponse,
                           end_stream ? kFlagEndStream : 0, stream));
  put_u16(out, status);
  put_u8(out, static_cast<uint8_t>(mode));
  put_bytes(out, header_block);
  return Status::Ok();
}

Status write_data(std::vector<uint8_t>& out, uint32_t stream, std::span<const uint8_t> data,
                  bool end_stream) {
  COILGUN_TRY(need_stream(stream));
  COILGUN_TRY(
      write_header(out, data.size(), FrameType::kData, end_stream ? kFlagEndStream : 0, stream));
  put_bytes(out, data);
  return Status::Ok();
}

Status write_trailers(std::vector<uint8_t>& out, uint32_t stream,
                      std::span<const uint8_t> header_block) {
  COILGUN_TRY(need_stream(stream));
  COILGUN_TRY(write_header(out, header_block.size(), FrameType::kTrailers, 0, stream));
  put_bytes(out, header_block);
  return Status::Ok();
}

// ---- Control frames -----------------------------------------------------------------------

Result<ResetReason> parse_reset(const Frame& frame) {
  ByteReader r(frame.payload);
  const uint32_t reason = r.u32();
  if (!r.ok()) return malformed("RESET truncated");
  // Unknown reasons are kept as they are: a newer peer may know more reasons than we do.
  return static_cast<ResetReason>(reason);
}

Status write_reset(std::vector<uint8_t>& out, uint32_t stream, ResetReason reason) {
  COILGUN_TRY(need_stream(stream));
  COILGUN_TRY(write_header(out, 4, FrameType::kReset, 0, stream));
  put_u32(out, static_cast<uint32_t>(reason));
  return Status::Ok();
}

Result<uint32_t> parse_window_update(const Frame& frame) {
  ByteReader r(frame.payload);
  const uint32_t word = r.u32();
  if (!r.ok()) return malformed("WINDOW_UPDATE truncated");
  const uint32_t increment = word & kMaxWindowIncrement;
  // RFC 9113 §6.9: an increment of 0 is an error.
  if (increment == 0) return malformed("WINDOW_UPDATE increment of 0");
  return increment;
}

Status write_window_update(std::vector<uint8_t>& out, uint32_t stream, uint32_t increment) {
  if (stream > kMaxStreamId) return Status(Code::kMalformed, "stream id out of range");
  if (increment == 0 || increment > kMaxWindowIncrement) {
    return Status(Code::kMalformed, "window increment out of range");
  }
  COILGUN_TRY(write_header(out, 4, FrameType::kWindowUpdate, 0, stream));
  put_u32(out, increment);
  return Status::Ok();
}

Result<uint64_t> parse_ping(const Frame& frame) {
  ByteReader r(frame.payload);
  const uint64_t opaque = r.u64();
  if (!r.ok()) return malformed("PING truncated");
  return opaque;
}

Status write_ping(std::vector<uint8_t>& out, uint64_t opaque, bool ack) {
  COILGUN_TRY(write_header(out, 8, FrameType::kPing, ack ? kFlagAck : 0, 0));
  put_u64(out, opaque);
  return Status::Ok();
}

Result<std::vector<Setting>> parse_settings(const Frame& frame) {
  std::vector<Setting> settings;
  ByteReader r(frame.payload);
  while (!r.empty()) {
    const uint16_t id = r.u16();
    const uint32_t value = r.u32();
    if (!r.ok()) return malformed("SETTINGS entry truncated");
    switch (static_cast<SettingId>(id)) {
      case SettingId::kMaxFramePayload:
        if (value < 16 * 1024 || value > kMaxFramePayloadLimit) {
          return malformed("SETTINGS max frame payload out of range");
        }
        break;
      case SettingId::kInitialStreamWindow:
        if (value > kMaxWindowIncrement) return malformed("SETTINGS initial window out of range");
        break;
      case SettingId::kMaxConcurrentStreams:
      case SettingId::kMaxHeaderBlock:
        break;
      default:
        continue;  // Unknown: ignored, so either side can add settings.
    }
    settings.push_back({static_cast<SettingId>(id), value});
  }
  return settings;
}

Status write_settings(std::vector<uint8_t>& out, std::span<const Setting> settings) {
  if (settings.size() > kMaxSettings) return Status(Code::kTooLarge, "too many settings");
  COILGUN_TRY(write_header(out, 6 * settings.size(), FrameType::kSettings, 0, 0));
  for (const Setting& s : settings) {
    put_u16(out, static_cast<uint16_t>(s.id));
    put_u32(out, s.value);
  }
  return Status::Ok();
}

Status write_settings_ack(std::vector<uint8_t>& out) {
  return write_header(out, 0, FrameType::kSettings, kFlagAck, 0);
}

Result<Goaway> parse_goaway(const Frame& frame) {
  ByteReader r(frame.payload);
  Goaway g;
  g.last_stream = r.u32() & kMaxStreamId;
  g.code = static_cast<GoawayCode>(r.u32());
  g.debug = as_string_view(r.rest());
  if (!r.ok()) return malformed("GOAWAY truncated");
  return g;
}

Status write_goaway(std::vector<uint8_t>& out, uint32_t last_stream, GoawayCode code,
                    std::string_view debug) {
  if (last_stream > kMaxStreamId) return Status(Code::kMalformed, "stream id out of range");
  if (debug.size() > kMaxGoawayDebug) debug = debug.substr(0, kMaxGoawayDebug);
  COILGUN_TRY(write_header(out, 8 + debug.size(), FrameType::kGoaway, 0, 0));
  put_u32(out, last_stream);
  put_u32(out, static_cast<uint32_t>(code));
  put_bytes(out, debug);
  return Status::Ok();
}

}  // namespace coilgun::proto
