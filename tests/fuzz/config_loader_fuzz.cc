// Fuzz target: the config loader (common/daemon/config.h) on arbitrary TOML. Input: one control byte
// (bit 0: edge, else origin), then the file's text.
//
// Checked: nothing crashes, hangs or leaks; a file that loads prints (to_toml) as a file that
// loads again into the same config, so --print-config always gives a usable file.

#include <cstdlib>
#include <string_view>

#include "edge/config.h"
#include "origin/config.h"

namespace {

using namespace coilgun::config;

template <typename Config, typename Parse>
void round_trip(std::string_view text, Parse parse) {
  auto first = parse(text, "fuzz.toml");
  if (!first.ok()) return;
  const std::string printed = to_toml(*first);
  auto again = parse(printed, "printed.toml");
  if (!again.ok() || !(*again == *first)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > 64 * 1024) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  if ((data[0] & 1) != 0) {
    round_trip<EdgeConfig>(text, [](std::string_view t, std::string_view n) {
      return parse_edge_toml(t, n);
    });
  } else {
    round_trip<OriginConfig>(text, [](std::string_view t, std::string_view n) {
      return parse_origin_toml(t, n);
    });
  }
  return 0;
}
