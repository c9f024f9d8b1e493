#include "proto/frame.h"

#include <catch2/catch.hpp>
#include <random>

#include "proto/bytes.h"

using namespace coilgun;
using namespace coilgun::proto;
using Bytes = std::vector<uint8_t>;

namespace {

// One of every frame, in a plausible order.
Bytes sample_stream() {
  Bytes out;
  const Setting settings[] = {{SettingId::kMaxFramePayload, 65536},
                              {SettingId::kInitialStreamWindow, 1 << 20}};
  REQUIRE(write_settings(out, settings).ok());
  REQUIRE(write_settings_ack(out).ok());
  const VersionId held[] = {VersionId{1, 2}, VersionId{3, 4}};
  const Bytes block = {9, 8, 7};
  REQUIRE(write_request(out, 1, held, block, true).ok());
  REQUIRE(write_response(out, 1, 200, BodyMode::kCoded, block, false).ok());
  REQUIRE(write_data(out, 1, Bytes(100, 0xab), false).ok());
  REQUIRE(write_data(out, 1, Bytes(), true).ok());
  REQUIRE(write_response(out, 3, 200, BodyMode::kStream, block, false).ok());
  REQUIRE(write_trailers(out, 3, block).ok());
  REQUIRE(write_window_update(out, 0, 12345).ok());
  REQUIRE(write_window_update(out, 3, 1).ok());
  REQUIRE(write_reset(out, 5, ResetReason::kUpstreamTimeout).ok());
  REQUIRE(write_ping(out, 0x0102030405060708ull, false).ok());
  REQUIRE(write_ping(out, 0x0102030405060708ull, true).ok());
  REQUIRE(write_goaway(out, 7, GoawayCode::kShutdown, "draining").ok());
  return out;
}

std::vector<Frame> decode_all(const FrameDecoder& dec, std::span<const uint8_t> in) {
  std::vector<Frame> frames;
  while (!in.empty()) {
    Frame f;
    auto used = dec.decode(in, f);
    REQUIRE(used.ok());
    REQUIRE(*used > 0);
    frames.push_back(f);
    in = in.subspan(*used);
  }
  return frames;
}

Bytes header(uint32_t length, uint8_t type, uint8_t flags, uint32_t stream) {
  Bytes h;
  put_u24(h, length);
  put_u8(h, type);
  put_u8(h, flags);
  put_u32(h, stream);
  return h;
}

Code decode_code(const Bytes& in, uint32_t max = kDefaultMaxFramePayload) {
  FrameDecoder dec(max);
  Frame f;
  auto r = dec.decode(in, f);
  return r.ok() ? Code::kOk : r.status().code();
}

}  // namespace

TEST_CASE("Every frame type round-trips through the codec", "[frame]") {
  const Bytes stream = sample_stream();
  const auto frames = decode_all(FrameDecoder(), stream);
  REQUIRE(frames.size() == 14);

  auto settings = parse_settings(frames[0]);
  REQUIRE(settings.ok());
  REQUIRE(settings->size() == 2);
  CHECK((*settings)[1].id == SettingId::kInitialStreamWindow);
  CHECK((*settings)[1].value == (1u << 20));
  CHECK(frames[1].type == FrameType::kSettings);
  CHECK(frames[1].flags == kFlagAck);

  auto req = parse_request(frames[2]);
  REQUIRE(req.ok());
  CHECK(frames[2].stream == 1);
  CHECK(frames[2].end_stream());
  REQUIRE(req->held.size() == 2);
  CHECK(req->held[1] == VersionId{3, 4});
  CHECK(Bytes(req->header_block.begin(), req->header_block.end()) == Bytes{9, 8, 7});

  auto resp = parse_response(frames[3]);
  REQUIRE(resp.ok());
  CHECK(resp->status == 200);
  CHECK(resp->mode == BodyMode::kCoded);
  CHECK_FALSE(frames[3].end_stream());

  CHECK(frames[4].payload.size() == 100);
  CHECK(frames[5].payload.empty());
  CHECK(frames[5].end_stream());
  CHECK(frames[7].type == FrameType::kTrailers);
  CHECK(frames[7].end_stream());

  auto wu = parse_window_update(frames[8]);
  REQUIRE(wu.ok());
  CHECK(*wu == 12345);
  CHECK(frames[8].stream == 0);

  auto reset = parse_reset(frames[10]);
  REQUIRE(reset.ok());
  CHECK(*reset == ResetReason::kUpstreamTimeout);
  CHECK(std::string(reset_reason_name(*reset)) == "upstream_timeout");

  auto ping = parse_ping(frames[11]);
  REQUIRE(ping.ok());
  CHECK(*ping == 0x0102030405060708ull);
  CHECK(frames[12].flags == kFlagAck);

  auto goaway = parse_goaway(frames[13]);
  REQUIRE(goaway.ok());
  CHECK(goaway->last_stream == 7);
  CHECK(goaway->code == GoawayCode::kShutdown);
  CHECK(goaway->debug == "draining");
}

TEST_CASE("FrameDecoder asks for more until a frame is whole, at every split", "[frame]") {
  const Bytes stream = sample_stream();
  const FrameDecoder dec;
  const auto whole = decode_all(dec, stream);
  // Feed each frame's bytes one more at a time: 0 (need more) until complete.
  size_t at = 0;
  for (const Frame& expect : whole) {
    const size_t size = kFrameHeaderSize + expect.payload.size();
    for (size_t cut = 0; cut < size; ++cut) {
      Frame f;
      auto r = dec.decode(std::span<const uint8_t>(stream).subspan(at, cut), f);
      REQUIRE(r.ok());
      CHECK(*r == 0);
    }
    at += size;
  }
  CHECK(at == stream.size());
}

TEST_CASE("A buffering reader fed random chunks sees the same frames", "[frame]") {
  const Bytes stream = sample_stream();
  const FrameDecoder dec;
  const auto whole = decode_all(dec, stream);
  std::mt19937 rng(5);
  for (int round = 0; round < 50; ++round) {
    Bytes buffer;
    std::vector<Bytes> seen;
    size_t fed = 0;
    while (fed < stream.size()) {
      const size_t n = std::min<size_t>(1 + rng() % 40, stream.size() - fed);
      buffer.insert(buffer.end(), stream.begin() + static_cast<long>(fed),
                    stream.begin() + static_cast<long>(fed + n));
      fed += n;
      for (;;) {
        Frame f;
        auto r = dec.decode(buffer, f);
        REQUIRE(r.ok());
        if (*r == 0) break;
        seen.emplace_back(buffer.begin(), buffer.begin() + static_cast<long>(*r));
        buffer.erase(buffer.begin(), buffer.begin() + static_cast<long>(*r));
      }
    }
    CHECK(buffer.empty());
    REQUIRE(seen.size() == whole.size());
  }
}

TEST_CASE("FrameDecoder refuses an oversized frame from its header alone", "[frame]") {
  // Only the 9 header bytes: the decoder must not wait for 1 MiB of payload first.
  CHECK(decode_code(header(1 << 20, 0, 0, 1)) == Code::kTooLarge);
  CHECK(decode_code(header(kDefaultMaxFramePayload, 0, 0, 1)) == Code::kOk);  // Needs more.
  CHECK(decode_code(header(100, 0, 0, 1), 99) == Code::kTooLarge);
  Bytes big;
  CHECK(write_data(big, 1, Bytes(kMaxFramePayloadLimit + 1), false).code() == Code::kTooLarge);
  CHECK(big.empty());
}

TEST_CASE("FrameDecoder enforces each frame type's rules", "[frame]") {
  auto with_payload = [](Bytes h, size_t n) {
    h.resize(h.size() + n, 0);
    return h;
  };
  CHECK(decode_code(header(0, 9, 0, 0)) == Code::kUnsupported);          // Unknown type.
  CHECK(decode_code(header(0, 0, 0, 0x80000001u)) == Code::kMalformed);  // Reserved bit.
  CHECK(decode_code(header(0, 0, 0, 0)) == Code::kMalformed);            // DATA, stream 0.
  CHECK(decode_code(header(0, 0, 0x2, 1)) == Code::kMalformed);          // Unknown flag.
  CHECK(decode_code(header(0, 1, 0, 1)) == Code::kMalformed);            // REQUEST empty.
  CHECK(decode_code(header(2, 2, 0, 1)) == Code::kMalformed);            // RESPONSE short.
  CHECK(decode_code(header(0, 3, 1, 1)) == Code::kMalformed);            // TRAILERS flag.
  CHECK(decode_code(header(3, 4, 0, 1)) == Code::kMalformed);            // RESET size.
  CHECK(decode_code(header(4, 4, 0, 0)) == Code::kMalformed);            // RESET stream 0.
  CHECK(decode_code(header(5, 5, 0, 0)) == Code::kMalformed);            // WINDOW size.
  CHECK(decode_code(header(8, 6, 0, 1)) == Code::kMalformed);            // PING stream.
  CHECK(decode_code(header(7, 6, 0, 0)) == Code::kMalformed);            // PING size.
  CHECK(decode_code(header(7, 7, 0, 0)) == Code::kMalformed);            // SETTINGS size.
  CHECK(decode_code(header(6, 7, 1, 0)) == Code::kMalformed);            // ACK payload.
  CHECK(decode_code(header(6 * 17, 7, 0, 0)) == Code::kTooLarge);        // Too many.
  CHECK(decode_code(header(7, 8, 0, 0)) == Code::kMalformed);            // GOAWAY short.
  CHECK(decode_code(header(8 + 257, 8, 0, 0)) == Code::kMalformed);      // GOAWAY long.
  CHECK(decode_code(with_payload(header(4, 5, 0, 0), 4)) == Code::kOk);
}

TEST_CASE("Payload parsers reject contents the type forbids", "[frame]") {
  const FrameDecoder dec;
  auto one = [&](const Bytes& bytes) {
    Frame f;
    auto r = dec.decode(bytes, f);
    REQUIRE(r.ok());
    REQUIRE(*r == bytes.size());
    return f;
  };
  SECTION("a REQUEST naming too many versions, or cut inside an id") {
    Bytes b = header(1 + 16 * 9, 1, 0, 1);
    b.push_back(9);
    b.resize(b.size() + 16 * 9);
    CHECK(parse_request(one(b)).status().code() == Code::kTooLarge);
    Bytes c = header(1 + 10, 1, 0, 1);
    c.push_back(1);
    c.resize(c.size() + 10);
    CHECK(parse_request(one(c)).status().code() == Code::kMalformed);
  }
  SECTION("a RESPONSE with a bad status or mode, or no body but no end") {
    Bytes b = header(3, 2, 1, 1);
    put_u16(b, 42);
    put_u8(b, 0);
    CHECK(parse_response(one(b)).status().code() == Code::kMalformed);
    Bytes c = header(3, 2, 1, 1);
    put_u16(c, 200);
    put_u8(c, 3);
    CHECK(parse_response(one(c)).status().code() == Code::kMalformed);
    Bytes d = header(3, 2, 0, 1);
    put_u16(d, 200);
    put_u8(d, 0);
    CHECK(parse_response(one(d)).status().code() == Code::kMalformed);
    // An interim head (103) is the other way round: no body, and never the stream's end.
    Bytes hints = header(3, 2, 0, 1);
    put_u16(hints, 103);
    put_u8(hints, 0);
    CHECK(parse_response(one(hints)).ok());
    Bytes ended = header(3, 2, 1, 1);
    put_u16(ended, 103);
    put_u8(ended, 0);
    CHECK(parse_response(one(ended)).status().code() == Code::kMalformed);
    Bytes streamed = header(3, 2, 0, 1);
    put_u16(streamed, 103);
    put_u8(streamed, 2);
    CHECK(parse_response(one(streamed)).status().code() == Code::kMalformed);
    std::vector<uint8_t> out;
    CHECK(write_response(out, 1, 103, BodyMode::kNone, {}, true).code() == Code::kMalformed);
    CHECK(write_response(out, 1, 103, BodyMode::kNone, {}, false).ok());
  }
  SECTION("a zero window increment, an out-of-range setting, an unknown setting") {
    Bytes w = header(4, 5, 0, 1);
    put_u32(w, 0x80000000u);  // Reserved bit set, increment 0.
    CHECK(parse_window_update(one(w)).status().code() == Code::kMalformed);
    Bytes s = header(12, 7, 0, 0);
    put_u16(s, 99);
    put_u32(s, 5);  // Unknown: ignored.
    put_u16(s, 1);
    put_u32(s, 100);  // Max frame payload below 16 KiB.
    CHECK(parse_settings(one(s)).status().code() == Code::kMalformed);
    Bytes u = header(6, 7, 0, 0);
    put_u16(u, 99);
    put_u32(u, 5);
    auto parsed = parse_settings(one(u));
    REQUIRE(parsed.ok());
    CHECK(parsed->empty());
  }
  SECTION("writers refuse what the peer would reject") {
    Bytes out;
    CHECK(write_data(out, 0, Bytes(1), false).code() == Code::kMalformed);
    CHECK(write_response(out, 1, 200, BodyMode::kNone, {}, false).code() == Code::kMalformed);
    CHECK(write_window_update(out, 1, 0).code() == Code::kMalformed);
    CHECK(write_request(out, 1, std::vector<VersionId>(9), {}, true).code() == Code::kTooLarge);
    CHECK(out.empty());
  }
}

TEST_CASE("Corrupting any byte of a frame stream never crashes the decoder", "[frame]") {
  const Bytes stream = sample_stream();
  const FrameDecoder dec;
  for (size_t at = 0; at < stream.size(); ++at) {
    Bytes bad = stream;
    bad[at] ^= 0x5a;
    std::span<const uint8_t> in(bad);
    while (!in.empty()) {
      Frame f;
      auto r = dec.decode(in, f);
      if (!r.ok() || *r == 0) break;
      REQUIRE(*r <= in.size());
      // Parsers on a decoded frame must fail cleanly or succeed; never read outside it.
      switch (f.type) {
        case FrameType::kRequest:
          (void)parse_request(f);
          break;
        case FrameType::kResponse:
          (void)parse_response(f);
          break;
        case FrameType::kReset:
          (void)parse_reset(f);
          break;
        case FrameType::kWindowUpdate:
          (void)parse_window_update(f);
          break;
        case FrameType::kPing:
          (void)parse_ping(f);
          break;
        case FrameType::kSettings:
          (void)parse_settings(f);
          break;
        case FrameType::kGoaway:
          (void)parse_goaway(f);
          break;
        default:
          break;
      }
      in = in.subspan(*r);
    }
  }
}
