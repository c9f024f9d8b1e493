#pragma once
// Whether the backend answers (issue #14). With [backend_health] path set, worker 0 sends
// "GET <path>" to the backend on a new connection every backend_health.interval; an
// answer with a 2xx or 3xx status within backend_health.timeout is healthy, anything else
// (refused, reset, a TLS failure, the timeout, a 4xx or 5xx) is not. The agent's /ready
// follows the last result, so that whatever sends it work (a load balancer, an edge checking
// /ready) stops while its backend is down; /stats and coilgun_backend_up show it, and the log
// says each change once.
//
//   HealthState   shared by every thread: what the last check found (atomics and a mutex).
//   BackendHealth one per agent, on worker 0's loop: the timer, the connection, the check.

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

#include "common/http/client.h"
#include "common/net/loop.h"

namespace coilgun::origin {

struct Shared;

class HealthState {
 public:
  enum class State : int { kOff, kUnknown, kUp, kDown };

  // Checks are configured: the state is unknown until the first one answers.
  void enable() { state_.store(State::kUnknown); }
  // Records a check's result; returns the state before it.
  State record(bool healthy, uint64_t rtt_ms, std::string error);
  State state() const { return state_.load(); }
  // /ready: the backend is not known to be down, and once checks are on, known to be up.
  bool ready() const {
    const State s = state();
    return s == State::kOff || s == State::kUp;
  }
  // For /stats: {"state", "rtt_ms", "last_error", "checks", "failures"}; "state" alone ("off")
  // without checks.
  nlohmann::json to_json() const;

 private:
  std::atomic<State> state_{State::kOff};
  mutable std::mutex mutex_;
  uint64_t rtt_ms_ = 0;     // Of the last healthy answer.
  std::string last_error_;  // Of the last failed check; kept after a recovery.
  uint64_t checks_ = 0, failures_ = 0;
};

const char* state_name(HealthState::State s);

class BackendHealth : private http::ClientHandler {
 public:
  // Starts checking at once, then every interval (read from the settings at each check).
  BackendHealth(uv::Loop& loop, Shared& shared);
  ~BackendHealth() override;
  BackendHealth(const BackendHealth&) = delete;
  BackendHealth& operator=(const BackendHealth&) = delete;

 private:
  void check();
  // Ends the check in flight with its result and arms the next one.
  void done(bool healthy, std::string error);

  void on_response_head(http::ResponseHead&& head) override { status_ = head.status; }
  void on_response_body(std::span<const uint8_t>) override {}
  void on_response_end() override;
  void on_error(Status status) override;

  uv::Loop& loop_;
  Shared& shared_;
  http::ClientPool pool_;  // Its acquire callbacks never run once it is gone, with this.
  uv::Timer next_, deadline_;
  std::unique_ptr<http::ClientConnection> conn_;
  const bool https_;  // The backend of the start (restart-only) is https://.
  bool checking_ = false;
  uint64_t check_id_ = 0;  // Numbers the checks: a late connection is matched to its own.
  int status_ = 0;
  uint64_t started_ms_ = 0;
};

}  // namespace coilgun::origin
