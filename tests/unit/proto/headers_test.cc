#include "proto/headers.h"

#include <zstd.h>

#include <catch2/catch.hpp>
#include <string>

#include "proto/bytes.h"

using namespace coilgun;
using namespace coilgun::proto;
using Bytes = std::vector<uint8_t>;

namespace {

std::vector<HeaderField> request_fields(const std::string& path, const std::string& cookie) {
  static std::string p, c;
  p = path;
  c = cookie;
  return {{":method", "GET"},
          {":scheme", "https"},
          {":authority", "www.example.com"},
          {":path", p},
          {"user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0"},
          {"accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"},
          {"cookie", c},
          {"x-custom-thing", "value with spaces"},
          {"accept-language", "en-GB,en;q=0.9"},
          {"x-empty", ""}};
}

Bytes encode(HeaderEncoder& enc, const std::vector<HeaderField>& fields) {
  Bytes out;
  REQUIRE(enc.encode(fields, out).ok());
  return out;
}

// The shared part of a block: what a compression-oracle attacker could measure.
Bytes shared_part(const Bytes& block) {
  ByteReader r(block);
  const uint64_t n = r.varint();
  auto s = r.bytes(n);
  return Bytes(s.begin(), s.end());
}

// A block made by hand, as a misbehaving peer would: |plain| as the first block of a connection
// (one zstd frame, no history), declaring its size unless |sized| is false.
Bytes forged_block(const Bytes& plain, const Bytes& secret = {}, bool sized = true) {
  ZSTD_CCtx* c = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, sized ? 1 : 0);
  Bytes shared(ZSTD_compressBound(plain.size()));
  const size_t n = ZSTD_compress2(c, shared.data(), shared.size(), plain.data(), plain.size());
  ZSTD_freeCCtx(c);
  REQUIRE_FALSE(ZSTD_isError(n));
  Bytes block;
  put_varint(block, n);
  block.insert(block.end(), shared.begin(), shared.begin() + static_cast<long>(n));
  block.insert(block.end(), secret.begin(), secret.end());
  return block;
}

Bytes literal_field(const std::string& name, const std::string& value) {
  Bytes b;
  put_u8(b, 0);
  put_varint(b, name.size());
  put_bytes(b, name);
  put_varint(b, 2 * value.size());
  put_bytes(b, value);
  return b;
}

}  // namespace

TEST_CASE("Header blocks round-trip fields in order, sensitive ones included", "[headers]") {
  HeaderEncoder enc;
  HeaderDecoder dec;
  for (int i = 0; i < 5; ++i) {
    const auto fields = request_fields(std::string("/news/").append(std::to_string(i)),
                                       std::string("session=abc").append(std::to_string(i)));
    const Bytes block = encode(enc, fields);
    auto got = dec.decode(block);
    REQUIRE(got.ok());
    REQUIRE(got->size() == fields.size());
    for (size_t k = 0; k < fields.size(); ++k) {
      CHECK((*got)[k].name == fields[k].name);
      CHECK((*got)[k].value == fields[k].value);
      CHECK((*got)[k].sensitive == is_sensitive_header(fields[k].name));
    }
  }
}

TEST_CASE("A header block repeated on a connection costs a fraction of the first", "[headers]") {
  HeaderEncoder enc;
  const Bytes first = encode(enc, request_fields("/a", "s=1"));
  const Bytes second = encode(enc, request_fields("/b", "s=1"));
  INFO("first " << first.size() << " second " << second.size());
  CHECK(second.size() * 3 < first.size());
}

TEST_CASE("Connections sharing a thread's zstd contexts keep their own histories", "[headers]") {
  // Two connections on one worker, their blocks interleaved: each decoder rebuilds its own
  // peer's fields, and a repeat still costs a fraction of its first block.
  HeaderEncoder enc_a, enc_b;
  HeaderDecoder dec_a, dec_b;
  for (int i = 0; i < 20; ++i) {
    const std::string path = "/page/" + std::to_string(i);
    const Bytes a = encode(enc_a, request_fields(path + "/a", "a=1"));
    const Bytes b = encode(enc_b, request_fields(path + "/b", "b=2"));
    auto got_b = dec_b.decode(b);
    REQUIRE(got_b.ok());
    auto got_a = dec_a.decode(a);
    REQUIRE(got_a.ok());
    CHECK((*got_a)[3].value == path + "/a");
    CHECK((*got_a)[6].value == "a=1");
    if (i > 0) CHECK(shared_part(a).size() < 40);
    got_b = dec_b.decode(encode(enc_b, request_fields(path + "/b2", "b=2")));
    REQUIRE(got_b.ok());
    CHECK((*got_b)[3].value == path + "/b2");
  }
}

TEST_CASE("Sensitive values never enter the shared compression context", "[headers]") {
  // Two connections send the same requests except for the cookie, and the first also sent a
  // non-sensitive field equal to the second's cookie. If cookies were compressed in the
  // shared stream, the second connection's block would shrink: a compression oracle.
  HeaderEncoder a, b;
  const std::string secret = "session=5f4dcc3b5aa765d61d8327deb882cf99";
  std::vector<HeaderField> warmup = request_fields("/", "x");
  warmup.push_back({"x-echo", secret});
  (void)encode(a, warmup);
  (void)encode(b, warmup);
  const Bytes with_match = encode(a, request_fields("/", secret));
  const Bytes without = encode(b, request_fields("/", "session=00000000000000000000000000000000"));
  const Bytes shared = shared_part(with_match);
  CHECK(shared == shared_part(without));
  CHECK(with_match.size() == without.size());
  // And the value travels raw, outside the shared part.
  const std::string raw(with_match.begin(), with_match.end());
  CHECK(raw.find(secret) != std::string::npos);
  CHECK(std::string(shared.begin(), shared.end()).find(secret) == std::string::npos);
}

TEST_CASE("A caller can mark any field sensitive", "[headers]") {
  HeaderEncoder enc;
  HeaderDecoder dec;
  const std::vector<HeaderField> fields = {{"x-api-key", "k-123", true}, {"accept", "*/*"}};
  const Bytes block = encode(enc, fields);
  auto got = dec.decode(block);
  REQUIRE(got.ok());
  CHECK((*got)[0].sensitive);
  CHECK((*got)[0].value == "k-123");
  CHECK_FALSE((*got)[1].sensitive);
}

TEST_CASE("HeaderEncoder refuses names and values that could break an HTTP message", "[headers]") {
  HeaderEncoder enc;
  Bytes out;
  const std::string nul("nul\0byte", 8);  // Outlives the views below.
  const std::vector<std::vector<HeaderField>> bad = {
      {{"Accept", "x"}},             // Uppercase.
      {{"bad name", "x"}},           // Space.
      {{"", "x"}},                   // Empty.
      {{":", "x"}},                  // Bare colon.
      {{"x-a", "one\r\nx-b: two"}},  // Header injection.
      {{"x-a", nul}},
  };
  for (const auto& fields : bad) {
    CHECK(enc.encode(fields, out).code() == Code::kMalformed);
  }
  CHECK(out.empty());
  // The stream is untouched by refused blocks: a good block still decodes on a fresh peer.
  HeaderDecoder dec;
  REQUIRE(dec.decode(encode(enc, request_fields("/", "c"))).ok());
}

TEST_CASE("HeaderDecoder checks names, values and structure a peer sends", "[headers]") {
  auto count_then = [](uint64_t count, const Bytes& fields) {
    Bytes plain;
    plain.reserve(16 + fields.size());
    put_varint(plain, count);
    put_bytes(plain, fields);
    return plain;
  };
  SECTION("a value with a line break") {
    HeaderDecoder dec;
    CHECK(dec.decode(forged_block(count_then(1, literal_field("x-a", "1\r\nx-b: 2"))))
              .status()
              .code() == Code::kMalformed);
  }
  SECTION("an uppercase name") {
    HeaderDecoder dec;
    CHECK(dec.decode(forged_block(count_then(1, literal_field("X-A", "1")))).status().code() ==
          Code::kMalformed);
  }
  SECTION("an unknown static index") {
    HeaderDecoder dec;
    Bytes f = {static_cast<uint8_t>(kStaticNameCount + 1), 0};
    CHECK(dec.decode(forged_block(count_then(1, f))).status().code() == Code::kMalformed);
  }
  SECTION("more fields than it says") {
    HeaderDecoder dec;
    Bytes two = literal_field("x-a", "1");
    Bytes more = literal_field("x-b", "2");
    two.insert(two.end(), more.begin(), more.end());
    CHECK(dec.decode(forged_block(count_then(1, two))).status().code() == Code::kMalformed);
  }
  SECTION("a sensitive value missing") {
    HeaderDecoder dec;
    Bytes f = {0, 3, 'x', '-', 'a', 1};  // Literal name, value spec 1 (sensitive).
    CHECK(dec.decode(forged_block(count_then(1, f))).status().code() == Code::kMalformed);
  }
  SECTION("too many fields") {
    HeaderDecoder dec(HeaderLimits{.max_fields = 3, .max_block_bytes = 65536});
    Bytes fields;
    for (int i = 0; i < 4; ++i) {
      Bytes one = literal_field("x-a", "1");
      fields.insert(fields.end(), one.begin(), one.end());
    }
    CHECK(dec.decode(forged_block(count_then(4, fields))).status().code() == Code::kTooLarge);
  }
  SECTION("a frame that does not declare its size") {
    HeaderDecoder dec;
    CHECK(dec.decode(forged_block(count_then(1, literal_field("x-a", "1")), {}, false))
              .status()
              .code() == Code::kCorrupt);
  }
  SECTION("a block that decompresses past the limit, stopped at the limit") {
    HeaderDecoder dec(HeaderLimits{.max_fields = 256, .max_block_bytes = 1000});
    // 100 KB of one repeated byte compresses to almost nothing: a decompression bomb.
    CHECK(dec.decode(forged_block(count_then(1, literal_field("x-a", std::string(100000, 'a')))))
              .status()
              .code() == Code::kTooLarge);
  }
}

TEST_CASE("After an error a HeaderDecoder refuses every later block", "[headers]") {
  HeaderEncoder enc;
  HeaderDecoder dec;
  const Bytes good = encode(enc, request_fields("/", "c"));
  Bytes bad = good;
  bad[bad.size() / 2] ^= 0xff;
  // Whatever the corrupted block does, once it fails the stream is unusable.
  if (!dec.decode(bad).ok()) {
    CHECK_FALSE(dec.decode(encode(enc, request_fields("/", "c"))).ok());
  }
  HeaderDecoder fresh;
  CHECK(fresh.decode(Bytes{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}).status().code() ==
        Code::kMalformed);
  CHECK_FALSE(fresh.decode(good).ok());
}

TEST_CASE("HeaderDecoder fails cleanly on every truncation and corruption", "[headers]") {
  HeaderEncoder enc;
  const Bytes block = encode(enc, request_fields("/path", "cookie-value"));
  for (size_t cut = 0; cut < block.size(); ++cut) {
    HeaderDecoder dec;
    auto r = dec.decode(std::span<const uint8_t>(block).first(cut));
    INFO("cut " << cut);
    CHECK_FALSE(r.ok());
  }
  for (size_t at = 0; at < block.size(); ++at) {
    HeaderDecoder dec;
    Bytes bad = block;
    bad[at] ^= 0x21;
    auto r = dec.decode(bad);
    if (r.ok()) {
      for (const HeaderField& f : *r) {
        CHECK(valid_header_name(f.name));
        CHECK(valid_header_value(f.value));
      }
    }
  }
}
