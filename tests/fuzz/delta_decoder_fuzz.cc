// Fuzz target: the delta payload parser and decoder. Input: base (length-prefixed) + payload.
// Any input must end in a clean error or in a body that hashes to the id the payload claims.

#include <cstdlib>

#include "proto/delta.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace coilgun::proto;
  static DeltaDecoder decoder;
  const auto [base, payload] = coilgun::fuzz::split(data, size);
  auto header = parse_delta(payload);
  if (!header.ok()) return 0;
  std::vector<uint8_t> out;
  const coilgun::Status s = decoder.decode(*header, base, 1 << 20, out);
  if (s.ok() && !(VersionId::of(out) == header->id)) std::abort();
  if (!s.ok() && !out.empty()) std::abort();
  return 0;
}
