#include "proto/headers.h"

#include <zstd.h>

#include <algorithm>
#include <unordered_map>

#include "proto/bytes.h"
#include "proto/zstd_frame.h"

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

constexpr int kLevel = 3;
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

// This thread's contexts, shared by every connection on it (a worker is one thread).
ZSTD_CCtx* thread_cctx() {
  thread_local const CCtxPtr c = [] {
    CCtxPtr made{ZSTD_createCCtx()};
    ZSTD_CCtx_setParameter(made.get(), ZSTD_c_compressionLevel, kLevel);
    ZSTD_CCtx_setParameter(made.get(), ZSTD_c_checksumFlag, 0);
    ZSTD_CCtx_setParameter(made.get(), ZSTD_c_contentSizeFlag, 1);
    return made;
  }();
  return c.get();
}

ZSTD_DCtx* thread_dctx() {
  thread_local const DCtxPtr d{ZSTD_createDCtx()};
  return d.get();
}

// Both ends update their history the same way after each block: the block's shared part is
// appended and only the last kHeaderHistoryBytes are kept.
void remember(std::vector<uint8_t>& history, std::span<const uint8_t> plain) {
  if (plain.size() >= kHeaderHistoryBytes) {
    history.assign(plain.end() - static_cast<long>(kHeaderHistoryBytes), plain.end());
    return;
  }
  const size_t keep = std::min(history.size(), kHeaderHistoryBytes - plain.size());
  history.erase(history.begin(), history.end() - static_cast<long>(keep));
  // Grown as it fills, never past kHeaderHistoryBytes: a connection that carried one small
  // request keeps a small history.
  if (const size_t need = keep + plain.size(); need > history.capacity()) {
    history.reserve(std::min(kHeaderHistoryBytes, std::max(need, 2 * history.capacity())));
  }
  history.insert(history.end(), plain.begin(), plain.end());
}

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

Status HeaderEncoder::encode(std::span<const HeaderField> fields, std::vector<uint8_t>& out) {
  // Scratch for this thread's blocks: nothing of a block stays with the connection but the
  // history.
  thread_local std::vector<uint8_t> plain_, secret_, shared_;
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

  ZSTD_CCtx* c = thread_cctx();
  ZSTD_CCtx_reset(c, ZSTD_reset_session_only);
  if (!history_.empty() && ZSTD_isError(ZSTD_CCtx_refPrefix(c, history_.data(), history_.size()))) {
    return Status(Code::kInternal, "header compression failed");
  }
  shared_.resize(ZSTD_compressBound(plain_.size()));
  const size_t n = ZSTD_compress2(c, shared_.data(), shared_.size(), plain_.data(), plain_.size());
  if (ZSTD_isError(n)) return Status(Code::kInternal, "header compression failed");
  remember(history_, plain_);
  put_varint(out, n);
  put_bytes(out, std::span<const uint8_t>(shared_.data(), n));
  put_bytes(out, secret_);
  return Status::Ok();
}
// ---- Decoder ------------------------------------------------------------------------------

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

  // The frame's declared size is checked against the limit before anything is allocated for
  // it, and it decodes in one shot into exactly that room.
  auto size = single_frame_size(shared);
  if (!size.ok()) return Status(Code::kCorrupt, "header block does not decode", Side::kTunnel);
  if (*size > limits_.max_block_bytes - secret_in.size())
    return too_large("header block too large");
  const size_t plain_size = *size;
  // A block much smaller than the largest so far gives the memory back: an idle connection keeps
  // only about its last block.
  if (plain_.capacity() > 2 * kHeaderHistoryBytes && plain_.capacity() / 4 > plain_size) {
    plain_ = {};
  }
  plain_.resize(plain_size + secret_in.size());
  ZSTD_DCtx* d = thread_dctx();
  ZSTD_DCtx_reset(d, ZSTD_reset_session_only);
  if (!history_.empty() && ZSTD_isError(ZSTD_DCtx_refPrefix(d, history_.data(), history_.size()))) {
    return Status(Code::kInternal, "header decompression failed", Side::kTunnel);
  }
  const size_t n = ZSTD_decompressDCtx(d, plain_.data(), plain_size, shared.data(), shared.size());
  if (ZSTD_isError(n) || n != plain_size) {
    return Status(Code::kCorrupt, "header block does not decode", Side::kTunnel);
  }
  const std::span<const uint8_t> plain(plain_.data(), plain_size);
  remember(history_, plain);
  // The sensitive section is copied next to the shared part, so every view stays valid until
  // the next call (the caller's block may not).
  std::copy(secret_in.begin(), secret_in.end(), plain_.begin() + static_cast<long>(plain_size));
  ByteReader secret(std::span<const uint8_t>(plain_.data() + plain_size, secret_in.size()));

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
