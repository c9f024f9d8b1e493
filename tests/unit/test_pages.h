#pragma once
// Deterministic test pages: news-like HTML with the kinds of edits real pages see between
// versions (a timestamp ticks, a headline is replaced, a teaser moves, a block is inserted or
// removed, a token changes everywhere). Seeded, so every run sees the same bytes.

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace coilgun::test {

using Bytes = std::vector<uint8_t>;

inline Bytes to_bytes(const std::string& s) { return Bytes(s.begin(), s.end()); }

class PageGen {
 public:
  explicit PageGen(uint32_t seed) : rng_(seed) {}

  std::string word() {
    static const char* kWords[] = {"market", "storm",  "council", "river",   "election", "team",
                                   "budget", "school", "harbour", "energy",  "festival", "court",
                                   "train",  "museum", "police",  "weather", "hospital", "bridge"};
    return kWords[rng_() % (sizeof(kWords) / sizeof(kWords[0]))];
  }

  std::string headline() {
    std::string h;
    const int words = 4 + static_cast<int>(rng_() % 6);
    for (int i = 0; i < words; ++i) {
      if (i > 0) h += ' ';
      h += word();
    }
    return h;
  }

  std::string token(int len = 16) {
    static const char kHex[] = "0123456789abcdef";
    std::string t;
    for (int i = 0; i < len; ++i) t += kHex[rng_() % 16];
    return t;
  }

  std::string teaser(int id) {
    return "<article class=\"teaser\" data-id=\"" + std::to_string(id) +
           "\">\n  <h2><a href=\"/news/" + std::to_string(id) + "\">" + headline() +
           "</a></h2>\n  <p class=\"lead\">" + headline() + ". " + headline() +
           ".</p>\n  <time datetime=\"2026-11-22T0" + std::to_string(rng_() % 10) + ":" +
           std::to_string(10 + rng_() % 50) + "\">today</time>\n</article>\n";
  }

  // A page of |teasers| articles between a fixed header and footer.
  std::vector<std::string> blocks(int teasers) {
    std::vector<std::string> b;
    for (int i = 0; i < teasers; ++i) b.push_back(teaser(1000 + i));
    return b;
  }

  static std::string render(const std::vector<std::string>& blocks, const std::string& stamp) {
    std::string page =
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>News</title>"
        "<link rel=\"stylesheet\" href=\"/static/site.css\"></head>\n<body>\n<header>Updated " +
        stamp + "</header>\n<main>\n";
    for (const auto& b : blocks) page += b;
    page += "</main>\n<footer>&copy; Example News. All rights reserved.</footer>\n</body></html>\n";
    return page;
  }

  // One version step: a new timestamp, a replaced headline, sometimes an inserted, removed or
  // moved teaser.
  void edit(std::vector<std::string>& b) {
    if (b.empty()) return;
    b[rng_() % b.size()] = teaser(static_cast<int>(2000 + rng_() % 1000));
    const uint32_t what = rng_() % 4;
    if (what == 0) b.insert(b.begin() + static_cast<long>(rng_() % b.size()), teaser(3000));
    if (what == 1 && b.size() > 2) b.erase(b.begin() + static_cast<long>(rng_() % b.size()));
    if (what == 2 && b.size() > 2) std::swap(b[rng_() % b.size()], b[rng_() % b.size()]);
  }

  Bytes random_bytes(size_t n) {
    Bytes out(n);
    for (auto& c : out) c = static_cast<uint8_t>(rng_());
    return out;
  }

  uint32_t next() { return rng_(); }

 private:
  std::mt19937 rng_;
};

}  // namespace coilgun::test
