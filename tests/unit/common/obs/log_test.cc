#include "common/obs/log.h"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace coilgun;
namespace fs = std::filesystem;

namespace {

// Captures every line written while it lives, then restores the defaults (stderr, level info,
// access log on).
class Capture {
 public:
  Capture() {
    log::set_sink_for_test([this](std::string_view line) {
      std::lock_guard lock(mutex_);
      lines_.emplace_back(line);
    });
  }
  ~Capture() {
    log::set_sink_stderr();
    log::set_level(log::Level::kInfo);
    log::set_access_enabled(true);
  }
  Capture(const Capture&) = delete;
  Capture& operator=(const Capture&) = delete;

  std::vector<std::string> lines() {
    std::lock_guard lock(mutex_);
    return lines_;
  }

  // Requires exactly one captured line, ending in its only newline, and parses it.
  nlohmann::json only_line() {
    std::vector<std::string> all = lines();
    REQUIRE(all.size() == 1);
    const std::string& line = all[0];
    REQUIRE(!line.empty());
    CHECK(line.back() == '\n');
    CHECK(line.find('\n') == line.size() - 1);
    return nlohmann::json::parse(line);  // Throws (fails the test) on invalid JSON or UTF-8.
  }

 private:
  std::mutex mutex_;
  std::vector<std::string> lines_;
};

// A fresh empty directory, removed with its contents on destruction.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "coilgun-log-test-XXXXXX").string();
    REQUIRE(mkdtemp(pattern.data()) != nullptr);
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::vector<std::string> read_lines(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) out.push_back(line);
  return out;
}

std::string read_all(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// "2026-11-22T08:30:00.123Z": 'd' marks a digit, anything else must match itself. (Not
// std::regex: under the sanitizers GCC 12 warns inside libstdc++'s regex.)
bool is_timestamp(std::string_view ts) {
  constexpr std::string_view kShape = "dddd-dd-ddTdd:dd:dd.dddZ";
  if (ts.size() != kShape.size()) return false;
  for (size_t i = 0; i < ts.size(); ++i) {
    const bool ok = kShape[i] == 'd' ? (ts[i] >= '0' && ts[i] <= '9') : ts[i] == kShape[i];
    if (!ok) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("A log line is one JSON object with ts, level, msg and the fields in order") {
  Capture capture;
  const std::string owned = "owned";
  log::info("tunnel up", {{"peer", "a"},
                          {"owned", owned},
                          {"view", std::string_view("v")},
                          {"negative", -5},
                          {"big", std::numeric_limits<uint64_t>::max()},
                          {"rtt_ms", 1.25},
                          {"ok", true},
                          {"none", nullptr}});
  const std::string raw = capture.lines().at(0);
  const nlohmann::json j = capture.only_line();
  REQUIRE(j.is_object());
  CHECK(is_timestamp(j["ts"].get<std::string>()));
  CHECK(j["level"] == "info");
  CHECK(j["msg"] == "tunnel up");
  CHECK(j["peer"] == "a");
  CHECK(j["owned"] == "owned");
  CHECK(j["view"] == "v");
  CHECK(j["negative"] == -5);
  CHECK(j["big"].get<uint64_t>() == std::numeric_limits<uint64_t>::max());
  CHECK(j["rtt_ms"] == 1.25);
  CHECK(j["ok"] == true);
  CHECK(j["none"].is_null());
  // The fixed members come first, then the fields as given.
  CHECK(raw.rfind("{\"ts\":\"", 0) == 0);
  CHECK(raw.find("\"level\":\"info\",\"msg\":\"tunnel up\",\"peer\":\"a\",\"owned\"") !=
        std::string::npos);
}

TEST_CASE("Lines below the minimum level are dropped") {
  Capture capture;
  log::set_level(log::Level::kWarn);
  CHECK(log::level() == log::Level::kWarn);
  CHECK_FALSE(log::enabled(log::Level::kInfo));
  CHECK(log::enabled(log::Level::kError));
  log::debug("d");
  log::info("i");
  log::warn("w");
  log::error("e");
  log::write(log::Level::kInfo, "i2");
  std::vector<std::string> lines = capture.lines();
  REQUIRE(lines.size() == 2);
  CHECK(nlohmann::json::parse(lines[0])["level"] == "warn");
  CHECK(nlohmann::json::parse(lines[1])["level"] == "error");

  log::set_level(log::Level::kDebug);
  log::debug("d");
  lines = capture.lines();
  REQUIRE(lines.size() == 3);
  CHECK(nlohmann::json::parse(lines[2])["level"] == "debug");
}

TEST_CASE("Log levels parse from their config names") {
  CHECK(log::parse_level("debug").value() == log::Level::kDebug);
  CHECK(log::parse_level("info").value() == log::Level::kInfo);
  CHECK(log::parse_level("warning").value() == log::Level::kWarn);
  CHECK(log::parse_level("error").value() == log::Level::kError);
  CHECK(log::parse_level(" INFO ").value() == log::Level::kInfo);  // As config files may say.
  CHECK(log::parse_level("loud").status().code() == Code::kConfig);
  CHECK(std::string(log::level_name(log::Level::kWarn)) == "warn");
}

TEST_CASE("Control characters, quotes and invalid UTF-8 still give valid JSON") {
  struct Case {
    std::string input;
    std::string decoded;  // What the JSON string must decode to.
  };
  const std::vector<Case> cases = {
      {"plain", "plain"},
      {"quote\" backslash\\ slash/", "quote\" backslash\\ slash/"},
      {std::string("nul\0x", 5), std::string("nul\0x", 5)},
      {"\x01\x1f\x7f\b\f\n\r\t", "\x01\x1f\x7f\b\f\n\r\t"},
      {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"},
      {"a\xff"
       "b",
       "a\xEF\xBF\xBD"
       "b"},
      {"\xc0\xaf", "\xEF\xBF\xBD\xEF\xBF\xBD"},                  // Overlong '/'.
      {"\xed\xa0\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"},  // A surrogate.
      {"\xe2\x82x", "\xEF\xBF\xBDx"},                            // Truncated: one maximal subpart.
      {"\xf4\x90\x80\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"},  // > U+10FFFF.
      {"\xf0\x9f\x98", "\xEF\xBF\xBD"},                                          // Cut at the end.
      {"\x80\xbf", "\xEF\xBF\xBD\xEF\xBF\xBD"},  // Lone continuation bytes.
  };
  for (const Case& c : cases) {
    INFO("input bytes: " << nlohmann::json(c.input).dump(-1, ' ', true,
                                                         nlohmann::json::error_handler_t::replace));
    Capture capture;
    log::warn(c.input, {{c.input, c.input}});
    const nlohmann::json j = capture.only_line();
    CHECK(j["msg"].get<std::string>() == c.decoded);
    CHECK(j[c.decoded].get<std::string>() == c.decoded);

    std::string direct;
    log::append_json_string(direct, c.input);
    CHECK(nlohmann::json::parse(direct).get<std::string>() == c.decoded);
    std::string valid;
    log::append_valid_utf8(valid, c.input);
    CHECK(valid == c.decoded);
  }
}

TEST_CASE("Every single byte value gives valid JSON") {
  for (int b = 0; b < 256; ++b) {
    const std::string input(1, static_cast<char>(b));
    std::string out;
    log::append_json_string(out, input);
    INFO("byte " << b);
    CHECK_NOTHROW(nlohmann::json::parse(out));
  }
}

TEST_CASE("Doubles print exactly and non-finite ones as null") {
  Capture capture;
  log::info("d", {{"a", 0.1},
                  {"b", 1e300},
                  {"nan", std::nan("")},
                  {"inf", -std::numeric_limits<double>::infinity()},
                  {"f", 2.5f}});
  log::info("spelling", {{"whole", 1000000.0}, {"small", 0.0005}, {"tiny", 1e-5}});
  const std::vector<std::string> lines = capture.lines();
  REQUIRE(lines.size() == 2);
  CHECK(lines[1].find("\"whole\":1000000,\"small\":0.0005,\"tiny\":1e-05}") != std::string::npos);
  const nlohmann::json j = nlohmann::json::parse(lines[0]);
  CHECK(j["a"] == 0.1);
  CHECK(j["b"] == 1e300);
  CHECK(j["nan"].is_null());
  CHECK(j["inf"].is_null());
  CHECK(j["f"] == 2.5);
}

TEST_CASE("A JSON field value is embedded, with invalid UTF-8 replaced") {
  Capture capture;
  const nlohmann::json section = {
      {"listen", "127.0.0.1:8080"}, {"workers", 4}, {"bad", std::string("x\xff", 2)}};
  log::info("config", {{"section", section}});
  const nlohmann::json j = capture.only_line();
  CHECK(j["section"]["listen"] == "127.0.0.1:8080");
  CHECK(j["section"]["workers"] == 4);
  CHECK(j["section"]["bad"] == "x\xEF\xBF\xBD");
}

TEST_CASE("Timestamps are UTC with milliseconds") {
  using namespace std::chrono;
  const sys_days day = year{2026} / 11 / 22;
  const system_clock::time_point tp = day + hours(5) + minutes(12) + seconds(3) + milliseconds(123);
  std::string out;
  log::append_timestamp(out, tp);
  CHECK(out == "2026-11-22T05:12:03.123Z");
  out.clear();
  log::append_timestamp(out, tp + microseconds(999));  // Truncated, not rounded.
  CHECK(out == "2026-11-22T05:12:03.123Z");
  out.clear();
  const sys_days eve = year{1999} / 12 / 31;
  log::append_timestamp(out, eve + hours(23) + minutes(59) + seconds(59) + milliseconds(9));
  CHECK(out == "1999-12-31T23:59:59.009Z");
  out.clear();
  log::append_timestamp(out, tp);  // After another second was cached.
  CHECK(out == "2026-11-22T05:12:03.123Z");
}

TEST_CASE("The access log writes one line whatever the level, and can be turned off") {
  using namespace std::chrono;
  Capture capture;
  log::set_level(log::Level::kError);
  log::AccessRecord r;
  r.ts = sys_days(year{2026} / 1 / 2) + hours(3) + milliseconds(4);
  r.method = "GET";
  r.host = "example.com";
  r.path = "/a?b=\"c\"";
  r.status = 200;
  r.body_bytes = 102400;
  r.link_bytes = 312;
  r.delta = log::DeltaResult::kDelta;
  r.duration_ms = 12.3456;
  log::access(r, {{"stream", 7}});
  const std::string raw = capture.lines().at(0);
  const nlohmann::json j = capture.only_line();
  CHECK(j["ts"] == "2026-01-02T03:00:00.004Z");
  CHECK(j["type"] == "access");
  CHECK_FALSE(j.contains("level"));
  CHECK(j["method"] == "GET");
  CHECK(j["host"] == "example.com");
  CHECK(j["path"] == "/a?b=\"c\"");
  CHECK(j["status"] == 200);
  CHECK(j["body_bytes"] == 102400);
  CHECK(j["link_bytes"] == 312);
  CHECK(j["delta"] == "delta");
  CHECK(raw.find("\"duration_ms\":12.346") != std::string::npos);
  CHECK_FALSE(j.contains("upstream_ms"));
  CHECK_FALSE(j.contains("error"));
  CHECK(j["stream"] == 7);

  log::AccessRecord failed;
  failed.method = "POST";
  failed.status = 502;
  failed.delta = log::DeltaResult::kNone;
  failed.upstream_ms = 0.5;
  failed.error = "tunnel_lost";
  log::access(failed);
  std::vector<std::string> lines = capture.lines();
  REQUIRE(lines.size() == 2);
  const nlohmann::json k = nlohmann::json::parse(lines[1]);
  CHECK(is_timestamp(k["ts"].get<std::string>()));  // Defaulted to now.
  CHECK(k["delta"] == "none");
  CHECK(k["upstream_ms"] == 0.5);
  CHECK(k["error"] == "tunnel_lost");

  log::set_access_enabled(false);
  CHECK_FALSE(log::access_enabled());
  log::access(r);
  CHECK(capture.lines().size() == 2);
}

TEST_CASE("reopen moves writing to a new file at the same path after rotation") {
  TempDir dir;
  const fs::path path = dir.path() / "coilgun.log";
  const fs::path rotated = dir.path() / "coilgun.log.1";
  REQUIRE(log::set_sink_file(path.string()).ok());
  log::info("one");
  fs::rename(path, rotated);
  log::info("two");  // Still the old descriptor: lands in the rotated file.
  REQUIRE(log::reopen().ok());
  log::info("three");
  log::set_sink_stderr();
  REQUIRE(log::reopen().ok());  // Not a file: nothing to do.

  const std::vector<std::string> old_lines = read_lines(rotated);
  const std::vector<std::string> new_lines = read_lines(path);
  REQUIRE(old_lines.size() == 2);
  REQUIRE(new_lines.size() == 1);
  CHECK(nlohmann::json::parse(old_lines[0])["msg"] == "one");
  CHECK(nlohmann::json::parse(old_lines[1])["msg"] == "two");
  CHECK(nlohmann::json::parse(new_lines[0])["msg"] == "three");
}

TEST_CASE("A log file that cannot be opened is refused and the sink is kept") {
  Capture capture;
  const Status s = log::set_sink_file("/nonexistent-coilgun-dir/x.log");
  CHECK(s.code() == Code::kIo);
  log::info("still captured");
  CHECK(capture.lines().size() == 1);
}

TEST_CASE("Concurrent logging from four threads gives only whole lines") {
  TempDir dir;
  const fs::path path = dir.path() / "concurrent.log";
  REQUIRE(log::set_sink_file(path.string()).ok());
  constexpr int kThreads = 4;
  constexpr int kLines = 2000;
  const std::string padding(300, 'p');  // Long lines make a torn write likelier to show.
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kLines; ++i) {
        if (i % 2 == 0) {
          log::info("line", {{"thread", t}, {"seq", i}, {"pad", padding}});
        } else {
          log::AccessRecord r;
          r.method = "GET";
          r.path = padding;
          r.status = 200;
          log::access(r, {{"thread", t}, {"seq", i}});
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  log::set_sink_stderr();

  const std::string all = read_all(path);
  REQUIRE(!all.empty());
  CHECK(all.back() == '\n');
  const std::vector<std::string> lines = read_lines(path);
  REQUIRE(lines.size() == size_t{kThreads} * kLines);
  std::vector<std::set<int>> seen(kThreads);
  size_t bad = 0;
  for (const std::string& line : lines) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.contains("thread")) {
      ++bad;
      continue;
    }
    seen[j["thread"].get<size_t>()].insert(j["seq"].get<int>());
  }
  CHECK(bad == 0);
  for (int t = 0; t < kThreads; ++t) CHECK(seen[t].size() == size_t{kLines});
}
