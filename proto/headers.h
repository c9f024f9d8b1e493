#pragma once
// Header blocks: the header fields of a request, response or trailers, compact on the wire.
//
// Each direction of a tunnel connection remembers the last kHeaderHistoryBytes of the header bytes
// it has coded (the decompressed shared parts, in order), and codes each block's shared part as one
// zstd frame with that history as its raw-content prefix: a field repeated across recent
// requests (user-agent, accept, the host, most of a path) costs a few bytes after its first
// appearance, as HPACK's dynamic table does (RFC 7541). The zstd contexts belong to the thread,
// not the connection (one per worker): an idle connection holds its two histories and nothing
// else (issue #13; a zstd stream per direction held a 96 KB decoder and a 64 KiB window). Values
// of sensitive fields (Cookie, Set-Cookie, Authorization, Proxy-Authorization by default) never
// enter the history: they travel raw in a section of their own, so a guessed secret cannot be
// confirmed by watching block sizes (RFC 7541 §7.1, the CRIME/BREACH lesson). Blocks must be
// decoded in the order they were encoded on the connection, which one TLS connection guarantees.
//
// Block layout (varints are LEB128):
//
//   +--------------------+----------------------------------+----------------------------+
//   | Shared length (v)  | Shared part (one zstd frame)     | Sensitive values ...       |
//   +--------------------+----------------------------------+----------------------------+
//
// The shared part is one zstd frame that declares its content size, coded with the history as
// its prefix (none on a connection's first block); it decompresses to: Count (v), then Count
// fields, each
//
//   +--------------------+----------------------------+---------------------------------+
//   | Name (8)           | [Name length (v), name]    | Value spec (v) [, value bytes]  |
//   +--------------------+----------------------------+---------------------------------+
//
// Name is 1..N, an index into kStaticNames, or 0 with a literal lowercase name following.
// Value spec is 2 * length for a value that follows, or 1 for a sensitive field whose value
// is the next one in the sensitive section (varint length, then bytes). Field order is kept.
//
// Names must be lowercase HTTP tokens, or a pseudo-header (":method" ...); values must not
// hold CR, LF or NUL (RFC 9110 §5.5). Both sides check, so a header block can never smuggle a
// line break into an HTTP/1.1 message.

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "proto/status.h"

namespace coilgun::proto {

struct HeaderField {
  std::string_view name;
  std::string_view value;
  bool sensitive = false;  // Set by the encoder from its sensitive-name list, or by the caller.
};

struct HeaderLimits {
  size_t max_fields = 256;
  size_t max_block_bytes = 64 * 1024;  // Decompressed shared part plus sensitive section.
};

// How much of its past header bytes each direction keeps: about the last five requests' fields.
inline constexpr size_t kHeaderHistoryBytes = 4096;

// The names every connection knows without sending them (index = position + 1).
extern const std::string_view kStaticNames[];
extern const size_t kStaticNameCount;

// True for names whose values must not be compressed across requests.
bool is_sensitive_header(std::string_view lowercase_name);

// True if |name| may appear in a header block: a lowercase token or a pseudo-header.
bool valid_header_name(std::string_view name);
// True if |value| may appear in a header block: no CR, LF or NUL.
bool valid_header_value(std::string_view value);

// Encodes header blocks for one direction of one connection. Not thread-safe; one per
// connection direction, used in order.
class HeaderEncoder {
 public:
  HeaderEncoder() = default;
  HeaderEncoder(const HeaderEncoder&) = delete;
  HeaderEncoder& operator=(const HeaderEncoder&) = delete;

  // Appends the block for |fields| to |out|. A field is sent as sensitive if its |sensitive|
  // flag is set or is_sensitive_header(name). Errors: kMalformed for a name or value that may
  // not be sent, kTooLarge over kMaxEncodeBytes; nothing is appended and the history is
  // untouched then. kInternal (zstd failed): close the connection.
  Status encode(std::span<const HeaderField> fields, std::vector<uint8_t>& out);

  static constexpr size_t kMaxEncodeBytes = 1 << 20;

 private:
  std::vector<uint8_t> history_;
};

// Decodes header blocks for one direction of one connection. Not thread-safe.
class HeaderDecoder {
 public:
  explicit HeaderDecoder(HeaderLimits limits = {}) : limits_(limits) {}
  HeaderDecoder(const HeaderDecoder&) = delete;
  HeaderDecoder& operator=(const HeaderDecoder&) = delete;

  // Decodes one block. The fields point into this decoder and stay valid until the next call.
  // Errors: kTooLarge (over a limit, checked against the frame's declared size before anything
  // is allocated for it), kMalformed (bad structure, name or value), kCorrupt (not one zstd
  // frame that declares its size, or it does not decode). Any error leaves the history
  // unusable: every later call fails, and the connection must close (as an HPACK
  // COMPRESSION_ERROR would).
  Result<std::span<const HeaderField>> decode(std::span<const uint8_t> block);

 private:
  Status decode_block(std::span<const uint8_t> block);

  HeaderLimits limits_;
  std::vector<uint8_t> history_;
  std::vector<uint8_t> plain_;  // The current block: its shared part, then its sensitive values.
  std::vector<HeaderField> fields_;
  bool broken_ = false;
};

}  // namespace coilgun::proto
