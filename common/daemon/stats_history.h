#pragma once
// The dashboard's history (/stats/history): one sample of the daemon's totals per interval, the
// last few hundred of them, served as one JSON document for the dashboard's charts
// (common/daemon/dashboard.h).
//
// Each sample is kept as its JSON text, 300-400 bytes. Kept as a nlohmann::json tree it took
// about 3 KB, and the edge's heap grew by 2-3 MiB over its first 15 minutes (commit 0311a19);
// tests/unit/common/daemon/stats_history_test.cc measures the bound.

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace coilgun::daemon {

// One sample of the totals the dashboard plots.
struct HistorySample {
  // A JSON object: t (Unix ms), body, link_in, link_out, requests, errors (5xx), client_errors
  // (4xx) and duration
  // (the request duration histogram: count, sum and the cumulative bucket counts, an array
  // of {le, count} in bound order).
  std::string text;
  double requests = 0;   // Every coilgun_requests_total, summed.
  double in_flight = 0;  // coilgun_exchanges_in_flight.
};

// Builds the sample of |totals| (metrics::Registry::to_json()) taken at |unix_ms|. Metrics that
// are missing count as 0. Any thread; pure.
HistorySample history_sample(const nlohmann::json& totals, int64_t unix_ms);

// The last capacity() samples, oldest first, in a ring of fixed size: once full, each push()
// replaces the oldest sample. Not thread-safe: the daemon uses it on its main thread only.
class StatsHistory {
 public:
  // Keeps up to |capacity| samples (0 is taken as 1), taken every |interval_ms|. Reserves the
  // ring's slots at once.
  StatsHistory(size_t capacity, int interval_ms);

  // Appends |sample|, which must be the text of one JSON object (history_sample()'s text);
  // it is kept as given, not parsed. Drops the oldest sample when full.
  void push(std::string sample);

  size_t size() const { return ring_.size(); }
  size_t capacity() const { return capacity_; }
  int interval_ms() const { return interval_ms_; }

  // Returns {"interval_ms":N,"samples":[...]}, the samples oldest first.
  std::string to_json() const;

 private:
  const size_t capacity_;
  const int interval_ms_;
  std::vector<std::string> ring_;  // Up to capacity_ slots; once full, next_ is the oldest.
  size_t next_ = 0;                // Where the next push() goes once full.
};

}  // namespace coilgun::daemon
