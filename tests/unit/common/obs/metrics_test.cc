#include "common/obs/metrics.h"

#include <array>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

using namespace coilgun;
using namespace coilgun::metrics;

namespace {

// Exactly representable in binary, so sums print exactly.
constexpr std::array<double, 2> kSmallBounds = {0.125, 1};

// The value of the first sample line that starts with |prefix| followed by a space, or -1.
int64_t sample_value(const std::string& text, const std::string& prefix) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    if (line.size() > prefix.size() && line.compare(0, prefix.size(), prefix) == 0 &&
        line[prefix.size()] == ' ') {
      return std::stoll(line.substr(prefix.size() + 1));
    }
    pos = end + 1;
  }
  return -1;
}

}  // namespace

TEST_CASE("Registry renders counters, gauges and histograms in the Prometheus text format") {
  Registry registry;
  auto& requests =
      registry.counter("coilgun_requests_total", "Requests served.", {"code", "method"});
  requests.with({"5xx", "POST"}).inc();
  requests.with({"2xx", "GET"}).inc(3);
  Gauge& open = registry.gauge("coilgun_open_connections", "Open client connections.");
  open.set(7);
  open.add(-2);
  auto& latency = registry.histogram("coilgun_request_duration_seconds", "Time to serve.",
                                     {"route"}, kSmallBounds);
  Histogram& a = latency.with({"a"});
  a.observe(0.0625);
  a.observe(0.125);  // On a bound: counted in that bound's bucket.
  a.observe(0.5);
  a.observe(3);
  registry.gauge_fn("coilgun_store_bytes", "Bytes held by the version store.", [] { return 1.5; });
  registry.gauge("coilgun_debt", "A negative gauge.", {"kind"}).with({"x"}).set(-3);
  registry.counter("coilgun_unused_total", "A labeled family with no children yet.", {"peer"});

  const std::string expected =
      "# HELP coilgun_debt A negative gauge.\n"
      "# TYPE coilgun_debt gauge\n"
      "coilgun_debt{kind=\"x\"} -3\n"
      "# HELP coilgun_open_connections Open client connections.\n"
      "# TYPE coilgun_open_connections gauge\n"
      "coilgun_open_connections 5\n"
      "# HELP coilgun_request_duration_seconds Time to serve.\n"
      "# TYPE coilgun_request_duration_seconds histogram\n"
      "coilgun_request_duration_seconds_bucket{route=\"a\",le=\"0.125\"} 2\n"
      "coilgun_request_duration_seconds_bucket{route=\"a\",le=\"1\"} 3\n"
      "coilgun_request_duration_seconds_bucket{route=\"a\",le=\"+Inf\"} 4\n"
      "coilgun_request_duration_seconds_sum{route=\"a\"} 3.6875\n"
      "coilgun_request_duration_seconds_count{route=\"a\"} 4\n"
      "# HELP coilgun_requests_total Requests served.\n"
      "# TYPE coilgun_requests_total counter\n"
      "coilgun_requests_total{code=\"2xx\",method=\"GET\"} 3\n"
      "coilgun_requests_total{code=\"5xx\",method=\"POST\"} 1\n"
      "# HELP coilgun_store_bytes Bytes held by the version store.\n"
      "# TYPE coilgun_store_bytes gauge\n"
      "coilgun_store_bytes 1.5\n"
      "# HELP coilgun_unused_total A labeled family with no children yet.\n"
      "# TYPE coilgun_unused_total counter\n";
  CHECK(registry.render_prometheus() == expected);
}

TEST_CASE("An unlabeled histogram renders le as its only label") {
  Registry registry;
  Histogram& h = registry.histogram("coilgun_link_rtt_seconds", "RTT.", kSmallBounds);
  h.observe(2);
  CHECK(registry.render_prometheus() ==
        "# HELP coilgun_link_rtt_seconds RTT.\n"
        "# TYPE coilgun_link_rtt_seconds histogram\n"
        "coilgun_link_rtt_seconds_bucket{le=\"0.125\"} 0\n"
        "coilgun_link_rtt_seconds_bucket{le=\"1\"} 0\n"
        "coilgun_link_rtt_seconds_bucket{le=\"+Inf\"} 1\n"
        "coilgun_link_rtt_seconds_sum 2\n"
        "coilgun_link_rtt_seconds_count 1\n");
}

TEST_CASE("Registry escapes label values and help text") {
  Registry registry;
  auto& f = registry.counter("coilgun_paths_total", "Help with \\ and\nnewline.", {"path"});
  f.with({"a\"b\\c\nd"}).inc();
  f.with({std::string_view("bad\xff", 4)}).inc(2);
  const std::string text = registry.render_prometheus();
  CHECK(text ==
        "# HELP coilgun_paths_total Help with \\\\ and\\nnewline.\n"
        "# TYPE coilgun_paths_total counter\n"
        "coilgun_paths_total{path=\"a\\\"b\\\\c\\nd\"} 1\n"
        "coilgun_paths_total{path=\"bad\xEF\xBF\xBD\"} 2\n");
}

TEST_CASE("Histogram buckets are cumulative and +Inf equals the count") {
  Registry registry;
  Histogram& h =
      registry.histogram("coilgun_request_duration_seconds", "Latency.", kLatencySecondsBuckets);
  const std::vector<double> values = {0.0001, 0.0005, 0.0007, 0.003, 0.003, 0.2,
                                      0.9,    4,      10,     11,    1e9};
  for (double v : values) h.observe(v);
  h.observe(std::numeric_limits<double>::quiet_NaN());  // Ignored.

  HistogramSnapshot snap = h.snapshot();
  REQUIRE(snap.cumulative.size() == kLatencySecondsBuckets.size() + 1);
  CHECK(snap.count == values.size());
  CHECK(snap.cumulative.back() == snap.count);
  for (size_t i = 1; i < snap.cumulative.size(); ++i) {
    CHECK(snap.cumulative[i - 1] <= snap.cumulative[i]);
  }
  // Compare every bucket with a naive count.
  for (size_t i = 0; i < kLatencySecondsBuckets.size(); ++i) {
    uint64_t naive = 0;
    for (double v : values) naive += v <= kLatencySecondsBuckets[i] ? 1 : 0;
    CHECK(snap.cumulative[i] == naive);
  }
  double sum = 0;
  for (double v : values) sum += v;
  CHECK(snap.sum == Approx(sum));

  const std::string text = registry.render_prometheus();
  CHECK(sample_value(text, "coilgun_request_duration_seconds_bucket{le=\"+Inf\"}") ==
        static_cast<int64_t>(values.size()));
  CHECK(sample_value(text, "coilgun_request_duration_seconds_count") ==
        static_cast<int64_t>(values.size()));
  CHECK(sample_value(text, "coilgun_request_duration_seconds_bucket{le=\"0.0005\"}") == 2);
  CHECK(sample_value(text, "coilgun_request_duration_seconds_bucket{le=\"10\"}") == 9);
}

TEST_CASE("Updates from four threads sum exactly") {
  Registry registry;
  Counter& c = registry.counter("coilgun_ops_total", "Ops.");
  Gauge& g = registry.gauge("coilgun_level", "Level.");
  Histogram& h = registry.histogram("coilgun_op_seconds", "Op time.", kSmallBounds);
  constexpr int kThreads = 4;
  constexpr int kIterations = 100000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kIterations; ++i) {
        c.inc();
        g.add(t % 2 == 0 ? 2 : -1);
        h.observe(0.5);
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(c.value() == uint64_t{kThreads} * kIterations);
  CHECK(g.value() == int64_t{kIterations} * (2 + 2 - 1 - 1));
  HistogramSnapshot snap = h.snapshot();
  CHECK(snap.count == uint64_t{kThreads} * kIterations);
  CHECK(snap.cumulative[0] == 0);
  CHECK(snap.cumulative[1] == snap.count);
  CHECK(snap.sum == 0.5 * kThreads * kIterations);  // Exact: sums of 0.5 stay integers/2.
}

TEST_CASE("Rendering while other threads update and add children is safe and monotonic") {
  Registry registry;
  Counter& c = registry.counter("coilgun_ops_total", "Ops.");
  auto& per_peer = registry.counter("coilgun_peer_ops_total", "Ops per peer.", {"peer"});
  auto& h = registry.histogram("coilgun_op_seconds", "Op time.", {"peer"}, kSmallBounds);
  std::atomic<int> live_threads{4};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20000; ++i) {
        c.inc();
        // New children appear while the admin thread renders.
        const std::string peer = std::to_string((t * 7 + i) % 64);
        if (i % 100 == 0) {
          per_peer.with({peer}).inc();
          h.with({peer}).observe(0.01 * (i % 200));
        }
      }
      live_threads.fetch_sub(1);
    });
  }
  int64_t last = 0;
  int renders = 0;
  while (live_threads.load() > 0 || renders < 3) {
    const std::string text = registry.render_prometheus();
    const int64_t now = sample_value(text, "coilgun_ops_total");
    CHECK(now >= last);
    last = now;
    nlohmann::json j = registry.to_json();
    CHECK(j.contains("coilgun_peer_ops_total"));
    ++renders;
  }
  for (auto& th : threads) th.join();
  CHECK(sample_value(registry.render_prometheus(), "coilgun_ops_total") == 4 * 20000);
}

TEST_CASE("Registry::to_json has the documented shape") {
  Registry registry;
  registry.counter("coilgun_requests_total", "Requests.", {"code", "method"})
      .with({"2xx", "GET"})
      .inc(12);
  registry.counter("coilgun_uptime_total", "Ticks.").inc(4);
  registry.gauge("coilgun_open", "Open.").set(-2);
  registry.gauge_fn("coilgun_ratio", "Ratio.", [] { return 0.25; });
  registry.gauge_fn("coilgun_broken", "NaN.", [] { return std::nan(""); });
  registry.gauge("coilgun_empty", "No children.", {"peer"});
  Histogram& h = registry.histogram("coilgun_op_seconds", "Op time.", kSmallBounds);
  h.observe(0.0625);
  h.observe(2);
  registry.histogram("coilgun_peer_seconds", "Per peer.", {"peer"}, kSmallBounds)
      .with({"a"})
      .observe(0.5);

  const nlohmann::json j = registry.to_json();
  CHECK(j["coilgun_requests_total"] == nlohmann::json{{"code=2xx,method=GET", 12}});
  CHECK(j["coilgun_uptime_total"] == 4);
  CHECK(j["coilgun_open"] == -2);
  CHECK(j["coilgun_ratio"] == 0.25);
  CHECK(j["coilgun_broken"].is_null());
  CHECK(j["coilgun_empty"] == nlohmann::json::object());
  // Buckets in bound order, not as strings sort ("+Inf" < "0.125" < "1").
  const auto bucket = [](const char* le, int count) {
    return nlohmann::json{{"le", le}, {"count", count}};
  };
  CHECK(j["coilgun_op_seconds"] ==
        nlohmann::json{{"count", 2},
                       {"sum", 2.0625},
                       {"buckets", {bucket("0.125", 1), bucket("1", 1), bucket("+Inf", 2)}}});
  CHECK(j["coilgun_peer_seconds"] ==
        nlohmann::json{{"peer=a",
                        {{"count", 1},
                         {"sum", 0.5},
                         {"buckets", {bucket("0.125", 0), bucket("1", 1), bucket("+Inf", 1)}}}}});
  CHECK(j.size() == 8);
  CHECK_NOTHROW(j.dump());
}

TEST_CASE("A process's own figures: process_ names, and a callback counter renders as one") {
  Registry registry;
  double cpu = 1.5;
  registry.counter_fn("process_cpu_seconds_total", "CPU.", [&cpu] { return cpu; });
  registry.gauge_fn("process_open_fds", "Fds.", [] { return 7.0; });
  cpu = 2.25;
  const std::string text = registry.render_prometheus();
  CHECK_THAT(text,
             Catch::Matchers::Contains(
                 "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 2.25\n"));
  CHECK_THAT(text,
             Catch::Matchers::Contains("# TYPE process_open_fds gauge\nprocess_open_fds 7\n"));
  CHECK_FALSE(registry.try_gauge_fn("process_x_total", "Gauge with _total.", {}).ok());
  CHECK_FALSE(registry.try_gauge("proc_x", "Another prefix.", {}).ok());
}

TEST_CASE("Registry refuses invalid names") {
  Registry registry;
  const auto refused = [](const Status& s) { return !s.ok() && s.code() == Code::kConfig; };
  CHECK(refused(registry.try_counter("requests_total", "No prefix.", {}).status()));
  CHECK(refused(registry.try_counter("coilgun_requests", "No _total.", {}).status()));
  CHECK(refused(registry.try_gauge("coilgun_open_total", "Gauge with _total.", {}).status()));
  CHECK(refused(registry.try_gauge("coilgun-open", "Dash.", {}).status()));
  CHECK(refused(registry.try_gauge("coilgun_é", "Non-ASCII.", {}).status()));
  CHECK(refused(registry.try_gauge("", "Empty.", {}).status()));
  CHECK(refused(registry.try_gauge("coilgun_x", "Bad label.", {"1abc"}).status()));
  CHECK(refused(registry.try_gauge("coilgun_x", "Reserved label.", {"__name"}).status()));
  CHECK(refused(registry.try_gauge("coilgun_x", "Repeated label.", {"a", "a"}).status()));
  CHECK(refused(registry.try_gauge("coilgun_x", "Empty label.", {""}).status()));
  CHECK(refused(
      registry.try_histogram("coilgun_h_seconds", "le label.", {"le"}, kSmallBounds).status()));
  const std::array<double, 2> unsorted = {1, 0.5};
  CHECK(refused(registry.try_histogram("coilgun_h_seconds", "Unsorted.", {}, unsorted).status()));
  const std::array<double, 2> repeated = {1, 1};
  CHECK(refused(registry.try_histogram("coilgun_h_seconds", "Repeated.", {}, repeated).status()));
  const std::array<double, 1> infinite = {std::numeric_limits<double>::infinity()};
  CHECK(refused(registry.try_histogram("coilgun_h_seconds", "Inf.", {}, infinite).status()));
  // Nothing refused was registered.
  CHECK(registry.render_prometheus().empty());
  // Colons and digits are fine after the first character.
  CHECK(registry.try_gauge("coilgun_a:b_2", "Fine.", {"a_1", "_b"}).ok());
}

TEST_CASE("Registering a name again returns the same family only when compatible") {
  Registry registry;
  auto& first = registry.counter("coilgun_requests_total", "Requests.", {"code"});
  auto& again = registry.counter("coilgun_requests_total", "Other help is ignored.", {"code"});
  CHECK(&first == &again);
  Counter& plain = registry.counter("coilgun_plain_total", "Plain.");
  CHECK(&plain == &registry.counter("coilgun_plain_total", "Plain."));

  CHECK_FALSE(registry.try_gauge("coilgun_requests_total", "Other kind.", {"code"}).ok());
  CHECK_FALSE(registry.try_counter("coilgun_requests_total", "Other labels.", {"peer"}).ok());
  CHECK_FALSE(registry.try_counter("coilgun_requests_total", "No labels.", {}).ok());
  registry.gauge("coilgun_open", "Open.");
  CHECK_FALSE(registry.try_gauge_fn("coilgun_open", "Callback over plain gauge.", {}).ok());
  registry.histogram("coilgun_h_seconds", "H.", kSmallBounds);
  CHECK(registry.try_histogram("coilgun_h_seconds", "Same bounds.", {}, kSmallBounds).ok());
  CHECK_FALSE(
      registry.try_histogram("coilgun_h_seconds", "Other bounds.", {}, kLatencySecondsBuckets)
          .ok());
}

TEST_CASE("Family::with returns the same child at a stable address") {
  Registry registry;
  auto& family = registry.counter("coilgun_requests_total", "Requests.", {"code"});
  Counter& ok = family.with({"2xx"});
  for (int i = 0; i < 1000; ++i) family.with({std::to_string(i)}).inc();
  std::string code = "2xx";
  CHECK(&family.with({code}) == &ok);
  ok.inc(5);
  CHECK(family.with({"2xx"}).value() == 5);
  CHECK(family.with({"7"}).value() == 1);
}

TEST_CASE("Callback gauges are computed at render time, replaced and removed") {
  Registry registry;
  double stored = 10;
  auto& tunnels = registry.gauge_fn("coilgun_tunnels", "Tunnels up.", {"peer"});
  tunnels.set({"a"}, [&] { return stored; });
  tunnels.set({"b"}, [] { return std::numeric_limits<double>::infinity(); });
  CHECK(registry.render_prometheus() ==
        "# HELP coilgun_tunnels Tunnels up.\n"
        "# TYPE coilgun_tunnels gauge\n"
        "coilgun_tunnels{peer=\"a\"} 10\n"
        "coilgun_tunnels{peer=\"b\"} +Inf\n");
  stored = 0.1;
  tunnels.set({"b"}, [] { return 2.0; });
  CHECK(registry.to_json()["coilgun_tunnels"] == nlohmann::json{{"peer=a", 0.1}, {"peer=b", 2}});
  tunnels.set({"a"}, nullptr);
  CHECK(registry.render_prometheus() ==
        "# HELP coilgun_tunnels Tunnels up.\n"
        "# TYPE coilgun_tunnels gauge\n"
        "coilgun_tunnels{peer=\"b\"} 2\n");

  registry.gauge_fn("coilgun_size_bytes", "Size.", [] { return 1.0; });
  registry.gauge_fn("coilgun_size_bytes", "Size.", [] { return 3.0; });  // Replaces.
  CHECK(registry.to_json()["coilgun_size_bytes"] == 3.0);
}

TEST_CASE("Invalid UTF-8 in label values never reaches the JSON snapshot") {
  Registry registry;
  registry.counter("coilgun_hosts_total", "Hosts.", {"host"})
      .with({std::string_view("h\xc3\x28", 3)})
      .inc();
  nlohmann::json j = registry.to_json();
  std::string dumped;
  REQUIRE_NOTHROW(dumped = j.dump());
  CHECK(j["coilgun_hosts_total"].contains("host=h\xEF\xBF\xBD("));
}
