#pragma once
// What the configuration tests share: a temporary directory, an argv, and the two daemons'
// loaders called the way main() calls them.

#include <stdlib.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>
#include <vector>

#include "edge/config.h"
#include "origin/config.h"

namespace coilgun::config::testing {

// A private directory under the system temp dir, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "coilgun-config-XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  // Writes |text| to |name| inside the directory and returns its path.
  std::string write(const std::string& name, const std::string& text) const {
    const std::string p = (path_ / name).string();
    std::ofstream out(p, std::ios::binary);
    out << text;
    return p;
  }
  std::string path(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// An argv for the loaders: argv[0] is the program, then |args|.
class Argv {
 public:
  Argv(std::initializer_list<std::string> args) : strings_{"coilgun-test"} {
    strings_.insert(strings_.end(), args.begin(), args.end());
    for (const std::string& s : strings_) ptrs_.push_back(s.c_str());
    ptrs_.push_back(nullptr);
  }
  int argc() const { return static_cast<int>(strings_.size()); }
  const char* const* argv() const { return ptrs_.data(); }

 private:
  std::vector<std::string> strings_;
  std::vector<const char*> ptrs_;
};

inline const char* const kTlsToml = "[tls]\nca = \"ca.pem\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n";

inline ConfigResult<Invocation<OriginConfig>> origin(const Argv& a, const EnvMap& env = {}) {
  return load_origin(a.argc(), a.argv(), env);
}
inline ConfigResult<Invocation<EdgeConfig>> edge(const Argv& a, const EnvMap& env = {}) {
  return load_edge(a.argc(), a.argv(), env);
}

}  // namespace coilgun::config::testing
