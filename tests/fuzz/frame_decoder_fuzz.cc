// Fuzz target: the frame decoder and every payload parser. Input: a byte stream from a peer.
// Each frame that parses is written again and must come out byte for byte the same.

#include <cstdlib>
#include <cstring>

#include "proto/frame.h"

namespace {

using namespace coilgun::proto;

void same_or_die(const std::vector<uint8_t>& again, std::span<const uint8_t> original) {
  if (again.size() != original.size() ||
      std::memcmp(again.data(), original.data(), again.size()) != 0) {
    std::abort();
  }
}

void check(const Frame& f, std::span<const uint8_t> bytes) {
  std::vector<uint8_t> again;
  switch (f.type) {
    case FrameType::kRequest: {
      auto r = parse_request(f);
      if (!r.ok()) return;
      if (!write_request(again, f.stream, r->held, r->header_block, f.end_stream()).ok())
        std::abort();
      break;
    }
    case FrameType::kResponse: {
      auto r = parse_response(f);
      if (!r.ok()) return;
      if (!write_response(again, f.stream, r->status, r->mode, r->header_block, f.end_stream())
               .ok()) {
        std::abort();
      }
      break;
    }
    case FrameType::kData:
      if (!write_data(again, f.stream, f.payload, f.end_stream()).ok()) std::abort();
      break;
    case FrameType::kTrailers:
      if (!write_trailers(again, f.stream, f.payload).ok()) std::abort();
      break;
    case FrameType::kReset: {
      auto r = parse_reset(f);
      if (!r.ok() || !write_reset(again, f.stream, *r).ok()) std::abort();
      break;
    }
    case FrameType::kWindowUpdate: {
      auto r = parse_window_update(f);
      if (!r.ok() || (f.payload[0] & 0x80)) return;  // A set reserved bit is not written back.
      if (!write_window_update(again, f.stream, *r).ok()) std::abort();
      break;
    }
    case FrameType::kPing: {
      auto r = parse_ping(f);
      if (!r.ok() || !write_ping(again, *r, f.flags != 0).ok()) std::abort();
      break;
    }
    case FrameType::kSettings:
      (void)parse_settings(f);  // Unknown settings are dropped: no byte-exact re-encoding.
      return;
    case FrameType::kGoaway: {
      auto r = parse_goaway(f);
      if (!r.ok() || (f.payload[0] & 0x80)) return;
      if (!write_goaway(again, r->last_stream, r->code, r->debug).ok()) std::abort();
      break;
    }
  }
  same_or_die(again, bytes);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const FrameDecoder decoder(1 << 16);
  std::span<const uint8_t> in(data, size);
  while (!in.empty()) {
    Frame f;
    auto used = decoder.decode(in, f);
    if (!used.ok() || *used == 0) break;
    if (*used > in.size()) std::abort();
    check(f, in.first(*used));
    in = in.subspan(*used);
  }
  return 0;
}
