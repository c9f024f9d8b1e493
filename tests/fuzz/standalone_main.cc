// Runs a libFuzzer target over files, without libFuzzer: how the seed corpora (and any crash
// found later and added to them) run as ordinary tests in the g++ builds.
//
//   <target> FILE_OR_DIR...

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace fs = std::filesystem;

static int run_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) {
    std::fprintf(stderr, "cannot read %s\n", p.c_str());
    return 1;
  }
  std::vector<uint8_t> data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  LLVMFuzzerTestOneInput(data.data(), data.size());
  return 0;
}

int main(int argc, char** argv) {
  int files = 0, errors = 0;
  for (int i = 1; i < argc; ++i) {
    const fs::path arg(argv[i]);
    if (fs::is_directory(arg)) {
      for (const auto& e : fs::directory_iterator(arg)) {
        if (!e.is_regular_file()) continue;
        errors += run_file(e.path());
        ++files;
      }
    } else {
      errors += run_file(arg);
      ++files;
    }
  }
  std::printf("ran %d inputs\n", files);
  // An empty corpus would make this test pass without testing anything.
  return errors == 0 && files > 0 ? 0 : 1;
}
