#pragma once
// The tunnel's frames: one TLS connection carries many streams, each an HTTP exchange.
// proto/PROTOCOL.md is the spec; this is its codec, with no I/O.
//
// Every frame starts with a 9-byte header (all integers big-endian):
//
//    0                   1                   2                   3
//    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//   +-----------------------------------------------+---------------+
//   |                 Length (24)                   |   Type (8)    |
//   +---------------+-+---------------------------------------------+
//   |   Flags (8)   |R|            Stream Id (31)                   |
//   +---------------+-+---------------------------------------------+
//   |                   Payload (Length bytes) ...                   |
//   +----------------------------------------------------------------+
//
// Length counts payload bytes only and is at most the receiver's max_frame_payload (SETTINGS;
// 64 KiB unless raised, never above 2^24 - 1). R is reserved and must be 0. Stream 0 is the
// connection itself.

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "proto/status.h"
#include "proto/version_id.h"

namespace coilgun::proto {

inline constexpr size_t kFrameHeaderSize = 9;
inline constexpr uint32_t kDefaultMaxFramePayload = 64 * 1024;
inline constexpr uint32_t kMaxFramePayloadLimit = (1u << 24) - 1;
inline constexpr uint32_t kMaxStreamId = 0x7fffffff;
inline constexpr size_t kMaxHeldVersions = 8;   // Version ids one REQUEST may name.
inline constexpr size_t kMaxGoawayDebug = 256;  // Bytes of text in a GOAWAY.
inline constexpr size_t kMaxSettings = 16;      // Entries in one SETTINGS frame.
inline constexpr uint32_t kMaxWindowIncrement = 0x7fffffff;

enum class FrameType : uint8_t {
  kData = 0x0,
  kRequest = 0x1,
  kResponse = 0x2,
  kTrailers = 0x3,
  kReset = 0x4,
  kWindowUpdate = 0x5,
  kPing = 0x6,
  kSettings = 0x7,
  kGoaway = 0x8,
};

// Flag bits. A frame type accepts only the flags listed for it; any other bit is an error.
inline constexpr uint8_t kFlagEndStream = 0x1;  // DATA, REQUEST, RESPONSE (TRAILERS implies it).
inline constexpr uint8_t kFlagAck = 0x1;        // PING (a pong), SETTINGS.

const char* frame_type_name(FrameType type);

// A decoded frame. |payload| points into the bytes given to FrameDecoder::decode and is valid
// while they are.
struct Frame {
  FrameType type = FrameType::kData;
  uint8_t flags = 0;
  uint32_t stream = 0;
  std::span<const uint8_t> payload;

  bool end_stream() const;
};

// Splits a byte stream into frames. Stateless apart from its limit; any thread.
class FrameDecoder {
 public:
  explicit FrameDecoder(uint32_t max_payload = kDefaultMaxFramePayload)
      : max_payload_(max_payload) {}

  // Called when SETTINGS changes what this side accepts.
  void set_max_payload(uint32_t max_payload) { max_payload_ = max_payload; }
  uint32_t max_payload() const { return max_payload_; }

  // Decodes the frame at the front of |input|. Returns the bytes it used (header + payload)
  // and fills |frame|; 0 when |input| does not yet hold a whole frame (read more and call
  // again with the same bytes first); or an error, after which the connection must close:
  //   kTooLarge    Length over the limit (checked from the header alone, before any payload
  //                is buffered);
  //   kUnsupported an unknown frame type;
  //   kMalformed   a reserved bit, a flag, a stream id or a payload size the type forbids.
  // Payload contents are checked by the parse_* functions below.
  Result<size_t> decode(std::span<const uint8_t> input, Frame& frame) const;

 private:
  uint32_t max_payload_;
};

// ---- Payloads -------------------------------------------------------------------------------
// Each parse_* checks a decoded frame's payload and returns views into it (valid while the
// payload is); each write_* appends one whole frame to |out|. Writers check nothing the
// caller controls except what would make a frame the peer must reject (they return
// kTooLarge/kMalformed then, appending nothing).

// REQUEST opens stream |stream| (a new id, larger than any before on this connection, opened
// by the edge). It names the versions of the URL the edge holds, newest first:
//
//   +---------------+--------------------------------+---------------------------+
//   | Count (8)     | Version ids (Count x 16 bytes) | Header block (rest) ...   |
//   +---------------+--------------------------------+---------------------------+
//
// Count is at most kMaxHeldVersions. The header block (proto/headers.h) carries :method,
// :scheme, :authority, :path and the request's header fields. END_STREAM: no request body.
struct RequestHead {
  std::vector<VersionId> held;
  std::span<const uint8_t> header_block;
};
Result<RequestHead> parse_request(const Frame& frame);
Status write_request(std::vector<uint8_t>& out, uint32_t stream, std::span<const VersionId> held,
                     std::span<const uint8_t> header_block, bool end_stream);

// RESPONSE answers a REQUEST on the same stream:
//
//   +-------------------------------+---------------+---------------------------+
//   | Status (16)                   | Body mode (8) | Header block (rest) ...   |
//   +-------------------------------+---------------+---------------------------+
//
// Body mode says what the DATA frames that follow carry: kNone (there are none; END_STREAM is
// set), kCoded (one delta payload, proto/delta.h: a full zstd body or a delta against a
// version the request named; the receiver buffers it whole, with a limit), or kStream (the
// body's bytes as they are, streamed with flow control).
//
// An interim head (status 1xx other than 101: 100 Continue, 103 Early Hints) has kNone and no
// END_STREAM; the final head follows on the same stream. A 101 answers an upgrade request: its
// mode is kStream, and the DATA both ways carry the new protocol's bytes.
enum class BodyMode : uint8_t { kNone = 0, kCoded = 1, kStream = 2 };
inline bool is_interim_status(uint16_t status) {
  return status >= 100 && status < 200 && status != 101;
}
struct ResponseHead {
  uint16_t status = 0;
  BodyMode mode = BodyMode::kNone;
  std::span<const uint8_t> header_block;
};
Result<ResponseHead> parse_response(const Frame& frame);
Status write_response(std::vector<uint8_t>& out, uint32_t stream, uint16_t status, BodyMode mode,
                      std::span<const uint8_t> header_block, bool end_stream);

// DATA carries body bytes; END_STREAM on the last. Any length up to the limit, 0 included.
Status write_data(std::vector<uint8_t>& out, uint32_t stream, std::span<const uint8_t> data,
                  bool end_stream);

// TRAILERS ends a stream with a header block of trailer fields (the whole payload). It always
// ends the stream; it carries no flags.
Status write_trailers(std::vector<uint8_t>& out, uint32_t stream,
                      std::span<const uint8_t> header_block);

// RESET abandons a stream, either side:
//
//   +---------------------------------------------------------------+
//   | Reason (32)                                                   |
//   +---------------------------------------------------------------+
enum class ResetReason : uint32_t {
  kCancel = 0,           // The client went away or no longer wants the response.
  kRefused = 1,          // Not processed at all: safe to retry elsewhere.
  kProtocol = 2,         // The peer broke a rule on this stream.
  kFlowControl = 3,      // The peer sent more than the window allowed.
  kUpstreamFailed = 4,   // The backend broke the connection or sent a malformed response.
  kUpstreamTimeout = 5,  // The backend did not answer in time.
  kTooLarge = 6,         // A body or header block over a limit.
  kInternal = 7,
  kBaseMissing = 8,      // A delta named a base the edge no longer holds: ask again in full.
  kUpstreamRefused = 9,  // No connection to the backend could be made: nothing was sent to it.
};
const char* reset_reason_name(ResetReason reason);
Result<ResetReason> parse_reset(const Frame& frame);
Status write_reset(std::vector<uint8_t>& out, uint32_t stream, ResetReason reason);

// WINDOW_UPDATE grants the sender |increment| more bytes of DATA payload on a stream, or on
// the whole connection (stream 0):
//
//   +-+-------------------------------------------------------------+
//   |R|              Window Size Increment (31)                     |
//   +-+-------------------------------------------------------------+
//
// The increment is 1 .. 2^31 - 1.
Result<uint32_t> parse_window_update(const Frame& frame);
Status write_window_update(std::vector<uint8_t>& out, uint32_t stream, uint32_t increment);

// PING (stream 0) carries 8 opaque bytes; the receiver answers with the same bytes and ACK.
//
//   +---------------------------------------------------------------+
//   | Opaque data (64)                                              |
//   +---------------------------------------------------------------+
Result<uint64_t> parse_ping(const Frame& frame);
Status write_ping(std::vector<uint8_t>& out, uint64_t opaque, bool ack);

// SETTINGS (stream 0) announces what the sender accepts; ACK (empty) confirms receipt:
//
//   +-------------------------------+---------------------------------------------------+
//   | Identifier (16)               | Value (32)                                        |  x N
//   +-------------------------------+---------------------------------------------------+
//
// At most kMaxSettings entries. Unknown identifiers are ignored (so either side can add some);
// known ones are range-checked by parse_settings.
enum class SettingId : uint16_t {
  kMaxFramePayload = 1,       // 16 KiB .. 2^24 - 1.
  kInitialStreamWindow = 2,   // 0 .. 2^31 - 1: the window each new stream starts with.
  kMaxConcurrentStreams = 3,  // Streams the sender lets the peer open at once.
  kMaxHeaderBlock = 4,        // Largest header block the sender decodes, decompressed.
};
struct Setting {
  SettingId id;
  uint32_t value;
};
Result<std::vector<Setting>> parse_settings(const Frame& frame);
Status write_settings(std::vector<uint8_t>& out, std::span<const Setting> settings);
Status write_settings_ack(std::vector<uint8_t>& out);

// GOAWAY (stream 0) starts a drain: the sender opens or accepts no streams above Last stream
// id; those at or below it run to completion.
//
//   +-+-------------------------------------------------------------+
//   |R|                  Last Stream Id (31)                        |
//   +-+-------------------------------------------------------------+
//   |                      Error Code (32)                          |
//   +---------------------------------------------------------------+
//   |                  Debug text (at most 256 bytes) ...           |
//   +---------------------------------------------------------------+
enum class GoawayCode : uint32_t { kNoError = 0, kProtocol = 1, kInternal = 2, kShutdown = 3 };
struct Goaway {
  uint32_t last_stream = 0;
  GoawayCode code = GoawayCode::kNoError;
  std::string_view debug;
};
Result<Goaway> parse_goaway(const Frame& frame);
Status write_goaway(std::vector<uint8_t>& out, uint32_t last_stream, GoawayCode code,
                    std::string_view debug);

}  // namespace coilgun::proto
