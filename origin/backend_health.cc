#include "origin/backend_health.h"

#include "common/obs/log.h"
#include "origin/worker.h"

namespace coilgun::origin {

const char* state_name(HealthState::State s) {
  switch (s) {
    case HealthState::State::kOff:
      return "off";
    case HealthState::State::kUnknown:
      return "unknown";
    case HealthState::State::kUp:
      return "up";
    case HealthState::State::kDown:
      return "down";
  }
  return "unknown";
}

HealthState::State HealthState::record(bool healthy, uint64_t rtt_ms, std::string error) {
  {
    std::lock_guard lock(mutex_);
    ++checks_;
    if (healthy) {
      rtt_ms_ = rtt_ms;
    } else {
      ++failures_;
      last_error_ = std::move(error);
    }
  }
  return state_.exchange(healthy ? State::kUp : State::kDown);
}

nlohmann::json HealthState::to_json() const {
  const State s = state();
  if (s == State::kOff) return {{"state", "off"}};
  std::lock_guard lock(mutex_);
  return {{"state", state_name(s)},
          {"rtt_ms", rtt_ms_},
          {"last_error", last_error_},
          {"checks", checks_},
          {"failures", failures_}};
}

BackendHealth::BackendHealth(uv::Loop& loop, Shared& shared)
    : loop_(loop),
      shared_(shared),
      // No idle connection is kept: each check dials (a backend that closes idle connections
      // would otherwise fail the check that reuses one just as it closes).
      pool_(loop, shared.now()->config.backend.host, shared.now()->config.backend.port,
            /*max_idle=*/0, shared.now()->config.backend_health.timeout,
            http::Parser::Limits{.max_header_bytes = shared.now()->config.limits.max_header_bytes,
                                 .max_headers = shared.now()->config.limits.max_headers}),
      next_(loop),
      deadline_(loop),
      https_(shared.now()->config.backend.https) {
  shared_.backend_health.enable();
  check();
}

BackendHealth::~BackendHealth() {
  if (conn_) conn_->detach();
}

void BackendHealth::check() {
  const auto settings = shared_.now();
  const config::OriginConfig& c = settings->config;
  // As the backend pool: the backend of the start (restart-only) decides TLS.
  if (https_ && settings->web_tls != nullptr) pool_.set_tls(settings->web_tls, c.backend_tls.name);
  checking_ = true;
  const uint64_t id = ++check_id_;
  status_ = 0;
  started_ms_ = loop_.now_ms();
  deadline_.start(c.backend_health.timeout,
                  [this] { done(false, "no answer within backend_health.timeout"); });
  pool_.acquire([this, id](Result<std::unique_ptr<http::ClientConnection>> r) {
    if (!checking_ || id != check_id_) {  // Of a check that timed out: it comes too late.
      if (r.ok()) pool_.release(std::move(r.value()));
      return;
    }
    if (!r.ok()) return done(false, r.status().to_string());
    conn_ = std::move(r.value());
    const config::OriginConfig& cfg = shared_.now()->config;
    http::RequestHead head;
    head.method = "GET";
    head.target = cfg.backend_health.path;
    head.headers = {{"Host", config::HostPort{cfg.backend.host, cfg.backend.port}.to_string()},
                    {"User-Agent", "coilgun-health"}};
    const Status s = conn_->send_request(std::move(head), http::BodyFraming::kNone, 0, this);
    if (!s.ok()) on_error(s);
  });
}

void BackendHealth::on_response_end() {
  pool_.release(std::move(conn_));  // Kept alive for the next check when it can be.
  if (status_ >= 200 && status_ < 400) return done(true, "");
  done(false, "status " + std::to_string(status_));
}

void BackendHealth::on_error(Status status) {
  const std::string detail = conn_ ? conn_->error_detail() : std::string();
  done(false, status.to_string() + (detail.empty() ? "" : " (" + detail + ")"));
}

void BackendHealth::done(bool healthy, std::string error) {
  if (!checking_) return;
  checking_ = false;
  deadline_.stop();
  if (conn_) {  // The deadline passed mid-exchange: that connection is not reused.
    conn_->detach();
    loop_.defer_delete(std::move(conn_));
  }
  const auto settings = shared_.now();
  const uint64_t rtt = loop_.now_ms() - started_ms_;
  const std::string backend = settings->config.backend.to_string();
  const HealthState::State before = shared_.backend_health.record(healthy, rtt, error);
  if (healthy && before != HealthState::State::kUp) {
    log::info("backend healthy", {{"backend", backend}, {"rtt_ms", rtt}});
  } else if (!healthy && before != HealthState::State::kDown) {
    log::warn(
        "backend unhealthy: the agent is not ready",
        {{"backend", backend}, {"path", settings->config.backend_health.path}, {"error", error}});
  }
  next_.start(settings->config.backend_health.interval, [this] { check(); });
}

}  // namespace coilgun::origin
