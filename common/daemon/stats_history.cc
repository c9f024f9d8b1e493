#include "common/daemon/stats_history.h"

#include <algorithm>
#include <utility>

namespace coilgun::daemon {

HistorySample history_sample(const nlohmann::json& totals, int64_t unix_ms) {
  auto number = [&](const char* name, const char* label = nullptr) -> double {
    auto it = totals.find(name);
    if (it == totals.end()) return 0;
    if (label == nullptr) return it->is_number() ? it->get<double>() : 0;
    auto v = it->find(label);
    return v != it->end() && v->is_number() ? v->get<double>() : 0;
  };
  HistorySample out;
  if (auto r = totals.find("coilgun_requests_total"); r != totals.end() && r->is_object()) {
    for (const auto& [k, v] : r->items()) {
      if (v.is_number()) out.requests += v.get<double>();
    }
  }
  out.in_flight = number("coilgun_exchanges_in_flight");
  nlohmann::json duration = nlohmann::json::object();
  if (auto d = totals.find("coilgun_request_duration_seconds"); d != totals.end()) duration = *d;
  const nlohmann::json sample = {
      {"t", unix_ms},
      {"body", number("coilgun_body_bytes_total")},
      {"link_in", number("coilgun_link_bytes_total", "direction=in")},
      {"link_out", number("coilgun_link_bytes_total", "direction=out")},
      {"requests", out.requests},
      {"errors", number("coilgun_requests_total", "code=5xx")},
      {"client_errors", number("coilgun_requests_total", "code=4xx")},
      {"duration", duration},
  };
  out.text = sample.dump();
  return out;
}

StatsHistory::StatsHistory(size_t capacity, int interval_ms)
    : capacity_(std::max<size_t>(1, capacity)), interval_ms_(interval_ms) {
  ring_.reserve(capacity_);
}

void StatsHistory::push(std::string sample) {
  if (ring_.size() < capacity_) {
    ring_.push_back(std::move(sample));
    return;
  }
  ring_[next_] = std::move(sample);
  next_ = (next_ + 1) % capacity_;
}

std::string StatsHistory::to_json() const {
  std::string body = R"({"interval_ms":)";
  body += std::to_string(interval_ms_);
  body += R"(,"samples":[)";
  // Oldest first: from next_ to the end, then from the start to next_ (0 until full).
  for (size_t i = 0; i < ring_.size(); ++i) {
    if (i > 0) body += ',';
    body += ring_[(next_ + i) % ring_.size()];
  }
  body += "]}";
  return body;
}

}  // namespace coilgun::daemon
