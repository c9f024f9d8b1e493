// Fuzz target: the header block decoder. Input: blocks of one connection, each prefixed with
// a 2-byte length. Whatever decodes must hold only valid names and values, and must come back
// the same through a fresh encoder and decoder.

#include <cstdlib>
#include <string>

#include "proto/bytes.h"
#include "proto/headers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace coilgun::proto;
  HeaderDecoder decoder(HeaderLimits{.max_fields = 64, .max_block_bytes = 16 * 1024});
  ByteReader in(std::span<const uint8_t>(data, size));
  while (!in.empty()) {
    const uint16_t len = in.u16();
    const std::span<const uint8_t> block = in.bytes(std::min<size_t>(len, in.remaining()));
    if (!in.ok()) break;
    auto fields = decoder.decode(block);
    if (!fields.ok()) break;
    for (const HeaderField& f : *fields) {
      if (!valid_header_name(f.name) || !valid_header_value(f.value)) std::abort();
    }
    // Round trip through a fresh pair.
    std::vector<std::string> names, values;
    std::vector<HeaderField> copy(fields->begin(), fields->end());
    HeaderEncoder encoder;
    std::vector<uint8_t> again;
    if (!encoder.encode(copy, again).ok()) std::abort();
    HeaderDecoder fresh;
    auto back = fresh.decode(again);
    if (!back.ok() || back->size() != copy.size()) std::abort();
    for (size_t i = 0; i < copy.size(); ++i) {
      if ((*back)[i].name != copy[i].name || (*back)[i].value != copy[i].value) std::abort();
    }
  }
  return 0;
}
