#include "proto/delta.h"

#include <catch2/catch.hpp>
#include <cstring>

#include "proto/c_deleter.h"
#include "proto/delta_matcher.h"
#include "tests/unit/test_pages.h"

using namespace coilgun;
using namespace coilgun::proto;
using coilgun::test::Bytes;
using coilgun::test::PageGen;
using coilgun::test::to_bytes;

namespace {

struct Pair {
  Bytes base, body;
};

// Successive versions of one generated page.
std::vector<Bytes> versions(uint32_t seed, int teasers, int count) {
  PageGen gen(seed);
  auto blocks = gen.blocks(teasers);
  std::vector<Bytes> out;
  for (int v = 0; v < count; ++v) {
    out.push_back(to_bytes(PageGen::render(
        blocks, "2026-11-22 0" + std::to_string(v % 10) + ":" + std::to_string(10 + v))));
    gen.edit(blocks);
  }
  return out;
}

Bytes encode(DeltaEncoder& enc, const Bytes* base, const Bytes& body) {
  Bytes out;
  std::optional<PreparedBase> prepared;
  if (base != nullptr) prepared.emplace(*base);
  REQUIRE(enc.encode(base ? &*prepared : nullptr, body, VersionId::of(body), out).ok());
  return out;
}

// Parses and decodes; returns the status and leaves the body in |out|.
Status decode(DeltaDecoder& dec, const Bytes& payload, const Bytes* base, size_t limit,
              Bytes& out) {
  auto header = parse_delta(payload);
  if (!header.ok()) return header.status();
  std::optional<std::span<const uint8_t>> b;
  if (base != nullptr) b = std::span<const uint8_t>(*base);
  return dec.decode(*header, b, limit, out);
}

// A naive model of what zstd does with sequences: copy literals, then copy |matchLength| bytes
// from |offset| back in base ++ body, one byte at a time (so overlapping copies work).
Bytes apply_sequences(const Bytes& base, const Bytes& body,
                      const std::vector<ZSTD_Sequence>& seqs) {
  Bytes virt = base;
  size_t pos = 0;
  for (const ZSTD_Sequence& s : seqs) {
    for (uint32_t k = 0; k < s.litLength; ++k) virt.push_back(body.at(pos++));
    REQUIRE(s.offset >= 1);
    REQUIRE(s.offset <= virt.size());
    REQUIRE(s.matchLength >= 3);
    const size_t from = virt.size() - s.offset;
    for (uint32_t k = 0; k < s.matchLength; ++k) virt.push_back(virt[from + k]);
    pos += s.matchLength;
  }
  while (pos < body.size()) virt.push_back(body[pos++]);
  return Bytes(virt.begin() + static_cast<long>(base.size()), virt.end());
}

}  // namespace

TEST_CASE("VersionId round-trips through its wire form and hex", "[delta]") {
  const Bytes body = to_bytes("hello, version");
  const VersionId id = VersionId::of(body);
  uint8_t wire[16];
  id.to_bytes(wire);
  CHECK(VersionId::from_bytes(wire) == id);
  CHECK(id.to_hex().size() == 32);
  CHECK_FALSE(VersionId::of(to_bytes("hello, version!")) == id);
}

TEST_CASE("DeltaEncoder codes bodies in full without a base, byte-exact", "[delta]") {
  DeltaEncoder enc;
  DeltaDecoder dec;
  PageGen gen(7);
  for (size_t size : {size_t{0}, size_t{1}, size_t{63}, size_t{64}, size_t{4096}, size_t{300000}}) {
    Bytes body = to_bytes(PageGen::render(gen.blocks(static_cast<int>(size / 400)), "x"));
    body.resize(size, 'a');
    const Bytes payload = encode(enc, nullptr, body);
    CHECK(enc.last_stats().kind == DeltaKind::kFull);
    Bytes out;
    REQUIRE(decode(dec, payload, nullptr, body.size(), out).ok());
    CHECK(out == body);
  }
}

TEST_CASE("DeltaEncoder sends a changed page as a small delta that rebuilds it exactly",
          "[delta]") {
  DeltaEncoder enc;
  DeltaDecoder dec;
  const auto v = versions(11, 300, 12);
  for (size_t i = 1; i < v.size(); ++i) {
    const Bytes payload = encode(enc, &v[i - 1], v[i]);
    CHECK(enc.last_stats().kind == DeltaKind::kDelta);
    CHECK(enc.last_stats().matcher_used);
    // A few teasers changed on a ~120 KB page: the delta must be a small fraction of it.
    CHECK(payload.size() * 50 < v[i].size());
    Bytes out;
    REQUIRE(decode(dec, payload, &v[i - 1], v[i].size(), out).ok());
    CHECK(out == v[i]);
  }
}

TEST_CASE("The keep-as-base flag travels in the kind byte and changes nothing else", "[delta]") {
  DeltaEncoder enc;
  DeltaDecoder dec;
  const auto v = versions(12, 200, 2);
  for (const Bytes* base : {static_cast<const Bytes*>(nullptr), &v[0]}) {
    Bytes payload = encode(enc, base, v[1]);
    auto plain = parse_delta(payload);
    REQUIRE(plain.ok());
    CHECK_FALSE(plain->keep_as_base);
    mark_keep_as_base(payload);
    auto kept = parse_delta(payload);
    REQUIRE(kept.ok());
    CHECK(kept->keep_as_base);
    CHECK(kept->kind == plain->kind);
    CHECK(kept->id == plain->id);
    Bytes out;
    REQUIRE(decode(dec, payload, base, v[1].size(), out).ok());
    CHECK(out == v[1]);
    payload[0] |= 0x40;  // Any other bit: not a kind this decoder knows.
    CHECK(parse_delta(payload).status().code() == Code::kMalformed);
  }
}

TEST_CASE("Every effort level round-trips and higher effort is not larger overall", "[delta]") {
  DeltaDecoder dec;
  const auto v = versions(12, 150, 8);
  size_t total_low = 0, total_high = 0;
  for (int effort = 1; effort <= 9; ++effort) {
    EncodeOptions o;
    o.effort = effort;
    DeltaEncoder enc(o);
    size_t total = 0;
    for (size_t i = 1; i < v.size(); ++i) {
      const Bytes payload = encode(enc, &v[i - 1], v[i]);
      total += payload.size();
      Bytes out;
      REQUIRE(decode(dec, payload, &v[i - 1], v[i].size(), out).ok());
      REQUIRE(out == v[i]);
    }
    if (effort == 1) total_low = total;
    if (effort == 9) total_high = total;
  }
  CHECK(total_high <= total_low);
}

TEST_CASE("DeltaMatcher sequences rebuild the body under a naive LZ77 model", "[delta]") {
  DeltaMatcher matcher;
  const auto v = versions(13, 200, 10);
  for (size_t i = 1; i < v.size(); ++i) {
    PreparedBase prepared(v[i - 1]);
    std::vector<ZSTD_Sequence> seqs;
    REQUIRE(matcher.run(prepared, v[i], matcher_params_for_effort(5), seqs));
    CHECK(apply_sequences(v[i - 1], v[i], seqs) == v[i]);
  }
}

TEST_CASE("Sequence frames are identical with and without the base referenced", "[delta]") {
  // delta.cc leaves the prefix out of ZSTD_compressSequences because the frame does not depend
  // on it; this holds zstd to that.
  DeltaMatcher matcher;
  const auto v = versions(14, 120, 4);
  for (size_t i = 1; i < v.size(); ++i) {
    PreparedBase prepared(v[i - 1]);
    std::vector<ZSTD_Sequence> seqs;
    REQUIRE(matcher.run(prepared, v[i], matcher_params_for_effort(5), seqs));
    Bytes frames[2];
    for (int with_prefix = 0; with_prefix < 2; ++with_prefix) {
      ZSTD_CCtx* c = ZSTD_createCCtx();
      configure_sequence_cctx(c);
      ZSTD_CCtx_setParameter(c, ZSTD_c_windowLog, 20);
      if (with_prefix) ZSTD_CCtx_refPrefix(c, v[i - 1].data(), v[i - 1].size());
      frames[with_prefix].resize(ZSTD_compressBound(v[i].size()));
      const size_t r =
          ZSTD_compressSequences(c, frames[with_prefix].data(), frames[with_prefix].size(),
                                 seqs.data(), seqs.size(), v[i].data(), v[i].size());
      REQUIRE_FALSE(ZSTD_isError(r));
      frames[with_prefix].resize(r);
      ZSTD_freeCCtx(c);
    }
    CHECK(frames[0] == frames[1]);
  }
}

TEST_CASE("A body unlike its base is coded in full, a copy of it in a few bytes", "[delta]") {
  DeltaEncoder enc;
  DeltaDecoder dec;
  PageGen gen(15);
  const Bytes base = gen.random_bytes(100000);
  const Bytes other = gen.random_bytes(100000);
  Bytes payload = encode(enc, &base, other);
  CHECK(enc.last_stats().kind == DeltaKind::kFull);
  Bytes out;
  REQUIRE(decode(dec, payload, nullptr, other.size(), out).ok());
  CHECK(out == other);

  payload = encode(enc, &base, base);
  CHECK(enc.last_stats().kind == DeltaKind::kDelta);
  CHECK(payload.size() < kDeltaHeaderDelta + 40);
  REQUIRE(decode(dec, payload, &base, base.size(), out).ok());
  CHECK(out == base);
}

TEST_CASE("Bodies larger than the chain table round-trip", "[delta]") {
  // 2^22 chain slots: base + body beyond that alias slots, which may cost ratio, never bytes.
  DeltaEncoder enc;
  DeltaDecoder dec;
  PageGen gen(16);
  auto blocks = gen.blocks(9000);
  const Bytes base = to_bytes(PageGen::render(blocks, "a"));
  for (int k = 0; k < 40; ++k) gen.edit(blocks);
  const Bytes body = to_bytes(PageGen::render(blocks, "b"));
  REQUIRE(base.size() + body.size() > (size_t{1} << 22));
  const Bytes payload = encode(enc, &base, body);
  CHECK(enc.last_stats().kind == DeltaKind::kDelta);
  Bytes out;
  REQUIRE(decode(dec, payload, &base, body.size(), out).ok());
  CHECK(out == body);
}

TEST_CASE("DeltaDecoder reports each failure with its own code", "[delta]") {
  DeltaEncoder enc;
  DeltaDecoder dec;
  const auto v = versions(17, 60, 2);
  const Bytes payload = encode(enc, &v[0], v[1]);
  REQUIRE(payload[0] == static_cast<uint8_t>(DeltaKind::kDelta));
  Bytes out;

  SECTION("a delta whose base is not held") {
    CHECK(decode(dec, payload, nullptr, v[1].size(), out).code() == Code::kBaseNotHeld);
  }
  SECTION("output over the limit, refused before decoding") {
    CHECK(decode(dec, payload, &v[0], v[1].size() - 1, out).code() == Code::kTooLarge);
    CHECK(out.empty());
  }
  SECTION("a different base") {
    Bytes wrong = v[0];
    wrong[wrong.size() / 2] ^= 0x20;
    const Status s = decode(dec, payload, &wrong, v[1].size(), out);
    CHECK_FALSE(s.ok());
    CHECK((s.code() == Code::kCorrupt || s.code() == Code::kIdMismatch));
  }
  SECTION("a body id that does not match") {
    Bytes bad = payload;
    bad[kDeltaHeaderDelta - 1] ^= 1;
    CHECK(decode(dec, bad, &v[0], v[1].size(), out).code() == Code::kIdMismatch);
  }
  SECTION("an unknown kind") {
    Bytes bad = payload;
    bad[0] = 7;
    CHECK(decode(dec, bad, &v[0], v[1].size(), out).code() == Code::kMalformed);
  }
}

TEST_CASE("DeltaDecoder fails cleanly on every truncation of a payload", "[delta]") {
  DeltaEncoder enc;
  DeltaDecoder dec;
  const auto v = versions(18, 40, 2);
  for (const Bytes* base : {static_cast<const Bytes*>(nullptr), &v[0]}) {
    const Bytes payload = encode(enc, base, v[1]);
    for (size_t cut = 0; cut < payload.size(); ++cut) {
      const Bytes part(payload.begin(), payload.begin() + static_cast<long>(cut));
      Bytes out;
      const Status s = decode(dec, part, base, v[1].size(), out);
      INFO("cut at " << cut);
      CHECK_FALSE(s.ok());
      CHECK((s.code() == Code::kMalformed || s.code() == Code::kCorrupt));
    }
  }
}

TEST_CASE("DeltaDecoder never returns wrong bytes from a corrupted payload", "[delta]") {
  DeltaEncoder enc;
  DeltaDecoder dec;
  const auto v = versions(19, 40, 2);
  for (const Bytes* base : {static_cast<const Bytes*>(nullptr), &v[0]}) {
    const Bytes payload = encode(enc, base, v[1]);
    for (size_t at = 0; at < payload.size(); ++at) {
      for (uint8_t flip : {uint8_t{0x01}, uint8_t{0x80}}) {
        Bytes bad = payload;
        bad[at] ^= flip;
        Bytes out;
        const Status s = decode(dec, bad, base, v[1].size() * 2, out);
        INFO("byte " << at << " flip " << int(flip));
        if (s.ok()) {
          CHECK(out == v[1]);  // Only bits zstd ignores (e.g. reserved) may leave it intact.
        } else {
          CHECK(out.empty());
        }
      }
    }
  }
}

TEST_CASE("parse_delta accepts exactly one current zstd frame that can hold its size", "[delta]") {
  DeltaEncoder enc;
  const Bytes body = to_bytes(std::string(5000, 'q'));
  const Bytes good = encode(enc, nullptr, body);
  REQUIRE(parse_delta(good).ok());

  SECTION("two frames back to back") {
    Bytes two = good;
    two.insert(two.end(), good.begin() + kDeltaHeaderFull, good.end());
    CHECK(parse_delta(two).status().code() == Code::kMalformed);
  }
  SECTION("a legacy (v0.7) magic number") {
    Bytes legacy = good;
    legacy[kDeltaHeaderFull] = 0x27;  // 0xFD2FB527 little-endian.
    CHECK(parse_delta(legacy).status().code() == Code::kMalformed);
  }
  SECTION("a skippable frame") {
    Bytes skippable(good.begin(), good.begin() + kDeltaHeaderFull);
    const uint8_t frame[] = {0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4};
    skippable.insert(skippable.end(), std::begin(frame), std::end(frame));
    CHECK(parse_delta(skippable).status().code() == Code::kMalformed);
  }
  SECTION("17 bytes claiming a 512 MiB body, refused before anything is allocated") {
    Bytes bomb(good.begin(), good.begin() + kDeltaHeaderFull);
    // Magic; descriptor: 8-byte content size, single segment; size; one raw 1-byte last block.
    const uint8_t frame[] = {0x28, 0xb5, 0x2f, 0xfd, 0xe0, 0, 0, 0, 0x20, 0, 0, 0, 0, 9, 0, 0, 'x'};
    bomb.insert(bomb.end(), std::begin(frame), std::end(frame));
    CHECK(parse_delta(bomb).status().code() == Code::kMalformed);
  }
}

TEST_CASE("Frames carry no checksum, and one that has one (an older sender) is checked",
          "[delta]") {
  DeltaEncoder enc;
  DeltaDecoder dec;
  const Bytes body = versions(21, 30, 1)[0];
  const Bytes ours = encode(enc, nullptr, body);
  // Frame header descriptor, after the 4-byte magic: bit 2 is Content_Checksum_flag.
  CHECK((ours.at(kDeltaHeaderFull + 4) & 0x04) == 0);

  // The same header before a frame plain zstd made with its checksum on.
  std::unique_ptr<ZSTD_CCtx, CDeleter<ZSTD_freeCCtx>> c(ZSTD_createCCtx());
  ZSTD_CCtx_setParameter(c.get(), ZSTD_c_checksumFlag, 1);
  Bytes frame(ZSTD_compressBound(body.size()));
  const size_t n = ZSTD_compress2(c.get(), frame.data(), frame.size(), body.data(), body.size());
  REQUIRE_FALSE(ZSTD_isError(n));
  Bytes theirs(ours.begin(), ours.begin() + kDeltaHeaderFull);
  theirs.insert(theirs.end(), frame.begin(), frame.begin() + static_cast<long>(n));
  REQUIRE((theirs.at(kDeltaHeaderFull + 4) & 0x04) != 0);
  Bytes out;
  REQUIRE(decode(dec, theirs, nullptr, body.size(), out).ok());
  CHECK(out == body);

  theirs.back() ^= 0x10;  // The checksum's last byte.
  CHECK(decode(dec, theirs, nullptr, body.size(), out).code() == Code::kCorrupt);
  CHECK(out.empty());
}

TEST_CASE("Delta frames decode with zstd's raw-content dictionary API too", "[delta]") {
  // Interoperability: nothing about a delta frame is private to DeltaDecoder.
  DeltaEncoder enc;
  const auto v = versions(20, 80, 3);
  for (size_t i = 1; i < v.size(); ++i) {
    const Bytes payload = encode(enc, &v[i - 1], v[i]);
    REQUIRE(payload[0] == static_cast<uint8_t>(DeltaKind::kDelta));
    Bytes out(v[i].size());
    std::unique_ptr<ZSTD_DCtx, CDeleter<ZSTD_freeDCtx>> d(ZSTD_createDCtx());
    const size_t r = ZSTD_decompress_usingDict(
        d.get(), out.data(), out.size(), payload.data() + kDeltaHeaderDelta,
        payload.size() - kDeltaHeaderDelta, v[i - 1].data(), v[i - 1].size());
    REQUIRE_FALSE(ZSTD_isError(r));
    CHECK(out == v[i]);
  }
}

TEST_CASE("Matcher knobs out of range are clamped, never hang or corrupt", "[delta]") {
  DeltaDecoder dec;
  const auto v = versions(21, 60, 3);
  EncodeOptions o;
  o.matcher = MatcherParams{0, 0, 0, 0, 0, 0, 0};
  DeltaEncoder enc(o);
  for (size_t i = 1; i < v.size(); ++i) {
    const Bytes payload = encode(enc, &v[i - 1], v[i]);
    Bytes out;
    REQUIRE(decode(dec, payload, &v[i - 1], v[i].size(), out).ok());
    CHECK(out == v[i]);
  }
}
