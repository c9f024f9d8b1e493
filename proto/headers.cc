#include "proto/headers.h"

#include <zstd.h>

#include <algorithm>
#include <unordered_map>

#include "proto/bytes.h"
#include "proto/c_deleter.h"

namespace coilgun::proto {

// Append-only: the index of a name is part of the wire format (proto/PROTOCOL.md).
const std::string_view kStaticNames[] = {
    ":method",
    ":scheme",
    ":authority",
    ":path",
    ":status",
    "accept",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "authorization",
    "cache-control",
    "content-encoding",
    "content-language",
    "content-length",
    "content-range",
    "content-type",
    "cookie",
    "date",
    "etag",
    "expires",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "link",
    "location",
    "pragma",
    "range",
    "referer",
    "server",
    "set-cookie",
    "strict-transport-security",
    "user-agent",
    "vary",
    "via",
    "www-authenticate",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-request-id",
    "origin",
    "sec-fetch-mode",
    "sec-fetch-site",
    "sec-fetch-dest",
    "upgrade-insecure-requests",
    "x-content-type-options",
    "content-security-policy",
    "access-control-allow-origin",
    "proxy-authorization",
    "priority",
    "sec-ch-ua",
    "sec-ch-ua-mobile",
    "sec-ch-ua-platform",
    "forwarded",
    "traceparent",
    "x-frame-options",
    "content-disposition",
};
const size_t kStaticNameCount = sizeof(kStaticNames) / sizeof(kStaticNames[0]);

namespace {

using CCtxPtr = std::unique_ptr<ZSTD_CCtx, CDeleter<ZSTD_freeCCtx>>;
using DCtxPtr = std::unique_ptr<ZSTD_DCtx, CDeleter<ZSTD_freeDCtx>>;

constexpr int kLevel = 3;
// 64 KiB of history: enough to remember the last several requests' fields, and all a peer
// may make the decoder keep.
constexpr int kWindowLog = 16;
constexpr size_t kMaxNameLength = 256;

uint8_t static_index(std::string_view name) {
  static const auto* index = [] {
    auto* m = new std::unordered_map<std::string_view, uint8_t>();
    for (size_t i = 0; i < kStaticNameCount; ++i)
      (*m)[kStaticNames[i]] = static_cast<uint8_t>(i + 1);
    return m;
  }();
  auto it = index->find(name);
  return it == index->end() ? 0 : it->second;
}

bool token_char(char c) {
  // RFC 9110 §5.6.2 tchar, lowercase letters only.
  if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) return true;
  switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '.':
    case '^':
    case '_':
    case '`':
    case '|':
    case '~':
      return true;
    default:
      return false;
  }
}

Status malformed(const char* what) { return Status(Code::kMalformed, what, Side::kTunnel); }
Status too_large(const char* what) { return Status(Code::kTooLarge, what, Side::kTunnel); }

}  // namespace

bool is_sensitive_header(std::string_view name) {
  return name == "cookie" || name == "set-cookie" || name == "authorization" ||
         name == "proxy-authorization";
}

bool valid_header_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameLength) return false;
  const size_t from = name[0] == ':' ? 1 : 0;
  if (from == name.size()) return false;
  return std::all_of(name.begin() + static_cast<long>(from), name.end(), token_char);
}

bool valid_header_value(std::string_view value) {
  return value.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
}

// ---- Encoder ------------------------------------------------------------------------------

struct HeaderEncoder::Zstd {
  CCtxPtr c{ZSTD_createCCtx()};
};

HeaderEncoder::HeaderEncoder() : zstd_(std::make_unique<Zstd>()) {
  ZSTD_CCtx_setParameter(zstd_->c.get(), ZSTD_c_compressionLevel, kLevel);
  ZSTD_CCtx_setParameter(zstd_->c.get(), ZSTD_c_windowLog, kWindowLog);
  ZSTD_CCtx_setParameter(zstd_->c.get(), ZSTD_c_checksumFlag, 0);
}

HeaderEncoder::~HeaderEncoder() = default;

Status HeaderEncoder::encode(std::span<const HeaderField> fields, std::vector<uint8_t>& out) {
  plain_.clear();
  secret_.clear();
  put_varint(plain_, fields.size());
  for (const HeaderField& f : fields) {
    if (!valid_header_name(f.name)) return Status(Code::kMalformed, "invalid header name");
    if (!valid_header_value(f.value)) return Status(Code::kMalformed, "invalid header value");
    const uint8_t index = static_index(f.name);
    put_u8(plain_, index);
    if (index == 0) {
      put_varint(plain_, f.name.size());
      put_bytes(plain_, f.name);
    }
    if (f.sensitive || is_sensitive_header(f.name)) {
      put_varint(plain_, 1);
      put_varint(secret_, f.value.size());
      put_bytes(secret_, f.value);
    } else {
      put_varint(plain_, 2 * uint64_t{f.value.size()});
      put_bytes(plain_, f.value);
    }
    if (plain_.size() + secret_.size() > kMaxEncodeBytes) {
      return Status(Code::kTooLarge, "header block too large");
    }
  }

  // Compress into the shared stream and flush, so the peer can decode this block now.
  shared_.resize(ZSTD_compressBound(plain_.size()) + 64);
  ZSTD_outBuffer o{shared_.data(), shared_.size(), 0};
  ZSTD_inBuffer in{plain_.data(), plain_.size(), 0};
  for (;;) {
    const size_t left = ZSTD_compressStream2(zstd_->c.get(), &o, &in, ZSTD_e_flush);
    if (ZSTD_isError(left)) return Status(Code::kInternal, "header compression failed");
    if (left == 0) break;
    shared_.resize(shared_.size() * 2);  // Rare: the flush did not fit.
    o.dst = shared_.data();
    o.size = shared_.size();
  }
  put_varint(out, o.pos);
  put_bytes(out, std::span<const uint8_t>(shared_.data(), o.pos));
  put_bytes(out, secret_);
  return Status::Ok();
}

// ---- Decoder ------------------------------------------------------------------------------

struct HeaderDecoder::Zstd {
  DCtxPtr d{ZSTD_createDCtx()};
};

HeaderDecoder::HeaderDecoder(HeaderLimits limits)
    : limits_(limits), zstd_(std::make_unique<Zstd>()) {
  ZSTD_DCtx_setParameter(zstd_->d.get(), ZSTD_d_windowLogMax, kWindowLog);
}

HeaderDecoder::~HeaderDecoder() = default;

Result<std::span<const HeaderField>> HeaderDecoder::decode(std::span<const uint8_t> block) {
  if (broken_) return malformed("header stream already failed");
  const Status s = decode_block(block);
  if (!s.ok()) {
    broken_ = true;
    fields_.clear();
    return s;
  }
  return std::span<const HeaderField>(fields_);
}

Status HeaderDecoder::decode_block(std::span<const uint8_t> block) {
  fields_.clear();
  ByteReader r(block);
  const uint64_t shared_len = r.varint(5);
  if (!r.ok() || shared_len > r.remaining()) return malformed("header block shared part truncated");
  const std::span<const uint8_t> shared = r.bytes(shared_len);
  const std::span<const uint8_t> secret_in = r.rest();
  if (secret_in.size() > limits_.max_block_bytes) return too_large("header block too large");

  // Decompress into a buffer one byte larger than what may be accepted: filling it means the
  // block is over the limit, found without ever holding more.
  const size_t limit = limits_.max_block_bytes - secret_in.size();
  plain_.resize(limit + 1 + secret_in.size());
  ZSTD_outBuffer o{plain_.data(), limit + 1, 0};
  ZSTD_inBuffer in{shared.data(), shared.size(), 0};
  while (in.pos < in.size) {
    const size_t r2 = ZSTD_decompressStream(zstd_->d.get(), &o, &in);
    if (ZSTD_isError(r2))
      return Status(Code::kCorrupt, "header stream does not decode", Side::kTunnel);
    if (o.pos == o.size) return too_large("header block too large");
  }
  // The sensitive section is copied next to the shared part, so every view stays valid until
  // the next call (the caller's block may not).
  std::copy(secret_in.begin(), secret_in.end(), plain_.begin() + static_cast<long>(o.pos));
  const std::span<const uint8_t> plain(plain_.data(), o.pos);
  ByteReader secret(std::span<const uint8_t>(plain_.data() + o.pos, secret_in.size()));

  ByteReader p(plain);
  const uint64_t count = p.varint(5);
  if (!p.ok()) return malformed("header count truncated");
  if (count > limits_.max_fields) return too_large("too many header fields");
  fields_.reserve(count);
  for (uint64_t i = 0; i < count; ++i) {
    HeaderField f;
    const uint8_t index = p.u8();
    if (index > kStaticNameCount) return malformed("unknown static header name");
    if (index != 0) {
      f.name = kStaticNames[index - 1];
    } else {
      const uint64_t len = p.varint(3);
      if (len > kMaxNameLength) return malformed("header name too long");
      f.name = as_string_view(p.bytes(len));
    }
    const uint64_t spec = p.varint(5);
    if (spec == 1) {
      f.sensitive = true;
      const uint64_t len = secret.varint(5);
      f.value = as_string_view(secret.bytes(secret.ok() ? len : 0));
      if (!secret.ok()) return malformed("sensitive header value truncated");
    } else {
      if (spec % 2 != 0) return malformed("bad header value spec");
      f.value = as_string_view(p.bytes(spec / 2));
    }
    if (!p.ok()) return malformed("header field truncated");
    if (!valid_header_name(f.name)) return malformed("invalid header name");
    if (!valid_header_value(f.value)) return malformed("invalid header value");
    fields_.push_back(f);
  }
  if (!p.empty()) return malformed("trailing bytes after header fields");
  if (!secret.empty()) return malformed("trailing bytes after sensitive values");
  return Status::Ok();
}

}  // namespace coilgun::proto
