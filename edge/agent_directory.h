#pragma once
// What the edge's admin shows about each agent (issue #14): tunnels up across the workers, the
// round trip of the last ping answered, the last error and when the state last changed.
// Workers report events of their tunnels (connections, not requests: rare), the admin thread
// reads. Thread-safe: one mutex.

#include <cstdint>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "common/obs/metrics.h"

namespace coilgun::edge {

class AgentDirectory {
 public:
  // Publishes each agent's tunnels and RTT in these families (label "agent"), from now on and
  // for agents known later. Call before any worker starts.
  void export_to(metrics::GaugeFnFamily* tunnels, metrics::GaugeFnFamily* rtt_seconds);
  // |agent| is one a route names (listed as idle until something happens).
  void known(const std::string& agent);
  // A tunnel to |agent| is up (one of a worker's).
  void tunnel_up(const std::string& agent);
  // One went down; |error| is "" for a close that loses nothing (GOAWAY, idle, edge stopping).
  void tunnel_down(const std::string& agent, const std::string& error);
  // A connection or handshake to |agent| failed.
  void failed(const std::string& agent, const std::string& error);
  // A ping to |agent| was answered after |ms|.
  void rtt(const std::string& agent, uint64_t ms);

  // {"up": n, "down": n, "idle": n, "list": [{"agent", "state", "tunnels", "rtt_ms",
  // "last_error", "since"}, ...]}: every agent counted, at most |limit| listed, those down
  // first, then by address. "state": "up" (a tunnel up), "down" (none, and the last event was
  // a failure), "idle" (none, closed without loss, or never dialled). "since": Unix ms of the
  // last change of state. rtt_ms and last_error are left out while unknown.
  nlohmann::json to_json(size_t limit) const;

 private:
  struct Entry {
    int tunnels = 0;
    bool failing = false;  // The last event was a failure.
    std::optional<uint64_t> rtt_ms;
    std::string last_error;
    int64_t since_ms = 0;
  };
  // The entry for |agent|, made on first use. Requires mutex_.
  Entry& at(const std::string& agent);
  static const char* state(const Entry& e);
  // Adds |tunnels| (clamped at 0; one up clears a failure) and records a non-empty |error| as
  // the last, a failure; since_ms moves when the state changes.
  void update(const std::string& agent, int tunnels, const std::string& error);

  // Reads one figure of |agent| for a metric (family mutex held, then this one's).
  double figure(const std::string& agent, bool rtt) const;

  mutable std::mutex mutex_;
  std::map<std::string, Entry> agents_;
  metrics::GaugeFnFamily* tunnels_family_ = nullptr;  // Set once, before the workers start.
  metrics::GaugeFnFamily* rtt_family_ = nullptr;
};

}  // namespace coilgun::edge
