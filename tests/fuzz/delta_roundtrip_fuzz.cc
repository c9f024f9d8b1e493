// Fuzz target: the encoder. Input: base (length-prefixed) + body. Every body must come back
// byte for byte through encode and decode, at every effort level the input picks.

#include <cstdlib>
#include <cstring>

#include "proto/delta.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace coilgun::proto;
  if (size == 0) return 0;
  static DeltaDecoder decoder;
  const int effort = 1 + data[0] % 9;
  const auto [base, body] = coilgun::fuzz::split(data + 1, size - 1);
  EncodeOptions options;
  options.effort = effort;
  DeltaEncoder encoder(options);
  PreparedBase prepared(base);
  std::vector<uint8_t> payload, out;
  if (!encoder.encode(&prepared, body, VersionId::of(body), payload).ok()) std::abort();
  auto header = parse_delta(payload);
  if (!header.ok()) std::abort();
  if (!decoder.decode(*header, base, body.size(), out).ok()) std::abort();
  if (out.size() != body.size() ||
      (!out.empty() && std::memcmp(out.data(), body.data(), out.size()) != 0)) {
    std::abort();
  }
  return 0;
}
