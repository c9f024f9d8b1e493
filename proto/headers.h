#pragma once
// Header blocks: the header fields of a request, response or trailers, compact on the wire.
//
// Each direction of a tunnel connection keeps one zstd stream for header blocks: every block
// is compressed in that stream and flushed, so a field repeated across requests (user-agent,
// accept, the host, most of a path) costs a few bits after its first appearance, as HPACK's
// dynamic table does (RFC 7541). Values of sensitive fields (Cookie, Set-Cookie,
// Authorization, Proxy-Authorization by default) never enter that shared context: they travel
// raw in a section of their own, so a guessed secret cannot be confirmed by watching block
// sizes (RFC 7541 §7.1, the CRIME/BREACH lesson). Blocks must be decoded in the order they
// were encoded on the connection, which one TLS connection guarantees.
//
// Block layout (varints are LEB128):
//
//   +--------------------+----------------------------------+----------------------------+
//   | Shared length (v)  | Shared part (zstd stream bytes)  | Sensitive values ...       |
//   +--------------------+----------------------------------+----------------------------+
//
// The shared part decompresses to: Count (v), then Count fields, each
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
#include <memory>
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
  HeaderEncoder();
  ~HeaderEncoder();
  HeaderEncoder(const HeaderEncoder&) = delete;
  HeaderEncoder& operator=(const HeaderEncoder&) = delete;

  // Appends the block for |fields| to |out|. A field is sent as sensitive if its |sensitive|
  // flag is set or is_sensitive_header(name). Errors: kMalformed for a name or value that may
  // not be sent, kTooLarge over kMaxEncodeBytes; nothing is appended and the shared stream is
  // untouched then. kInternal (zstd failed) breaks the stream: close the connection.
  Status encode(std::span<const HeaderField> fields, std::vector<uint8_t>& out);

  static constexpr size_t kMaxEncodeBytes = 1 << 20;

 private:
  struct Zstd;
  std::unique_ptr<Zstd> zstd_;
  std::vector<uint8_t> plain_;
  std::vector<uint8_t> secret_;
  std::vector<uint8_t> shared_;
};

// Decodes header blocks for one direction of one connection. Not thread-safe.
class HeaderDecoder {
 public:
  explicit HeaderDecoder(HeaderLimits limits = {});
  ~HeaderDecoder();
  HeaderDecoder(const HeaderDecoder&) = delete;
  HeaderDecoder& operator=(const HeaderDecoder&) = delete;

  // Decodes one block. The fields point into this decoder and stay valid until the next call.
  // Errors: kTooLarge (over a limit, checked while decompressing: nothing larger is ever
  // allocated), kMalformed (bad structure, name or value), kCorrupt (the zstd stream). Any
  // error leaves the shared stream unusable: every later call fails, and the connection must
  // close (as an HPACK COMPRESSION_ERROR would).
  Result<std::span<const HeaderField>> decode(std::span<const uint8_t> block);

 private:
  Status decode_block(std::span<const uint8_t> block);

  struct Zstd;
  HeaderLimits limits_;
  std::unique_ptr<Zstd> zstd_;
  std::vector<uint8_t> plain_;  // Decompressed shared part of the current block.
  std::vector<HeaderField> fields_;
  bool broken_ = false;
};

}  // namespace coilgun::proto
