#include "edge/agent_directory.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

namespace coilgun::edge {
namespace {

int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

AgentDirectory::Entry& AgentDirectory::at(const std::string& agent) {
  auto [it, made] = agents_.try_emplace(agent);
  if (made) it->second.since_ms = unix_ms();
  return it->second;
}

const char* AgentDirectory::state(const Entry& e) {
  if (e.tunnels > 0) return "up";
  return e.failing ? "down" : "idle";
}

void AgentDirectory::export_to(metrics::GaugeFnFamily* tunnels, metrics::GaugeFnFamily* rtt) {
  tunnels_family_ = tunnels;
  rtt_family_ = rtt;
}

void AgentDirectory::known(const std::string& agent) {
  bool made;
  {
    std::lock_guard lock(mutex_);
    made = !agents_.contains(agent);
    (void)at(agent);
  }
  // Outside this mutex: rendering takes the family's, then (figure()) this one.
  if (made && tunnels_family_ != nullptr) {
    tunnels_family_->set({agent}, [this, agent] { return figure(agent, false); });
    rtt_family_->set({agent}, [this, agent] { return figure(agent, true); });
  }
}

double AgentDirectory::figure(const std::string& agent, bool rtt) const {
  std::lock_guard lock(mutex_);
  const auto it = agents_.find(agent);
  if (it == agents_.end()) return 0;
  if (!rtt) return it->second.tunnels;
  return it->second.rtt_ms ? static_cast<double>(*it->second.rtt_ms) / 1000 : 0;
}

void AgentDirectory::update(const std::string& agent, int tunnels, const std::string& error) {
  std::lock_guard lock(mutex_);
  Entry& e = at(agent);
  const char* before = state(e);
  e.tunnels = std::max(0, e.tunnels + tunnels);
  if (tunnels > 0) e.failing = false;
  if (!error.empty()) {
    e.failing = true;
    e.last_error = error;
  }
  if (std::strcmp(before, state(e)) != 0) e.since_ms = unix_ms();
}

void AgentDirectory::tunnel_up(const std::string& agent) { update(agent, 1, ""); }

void AgentDirectory::tunnel_down(const std::string& agent, const std::string& error) {
  update(agent, -1, error);
}

void AgentDirectory::failed(const std::string& agent, const std::string& error) {
  update(agent, 0, error);
}

void AgentDirectory::rtt(const std::string& agent, uint64_t ms) {
  std::lock_guard lock(mutex_);
  at(agent).rtt_ms = ms;
}

nlohmann::json AgentDirectory::to_json(size_t limit) const {
  std::lock_guard lock(mutex_);
  std::vector<const std::pair<const std::string, Entry>*> order;
  size_t up = 0, down = 0;
  for (const auto& a : agents_) {
    order.push_back(&a);
    const char* s = state(a.second);
    up += std::strcmp(s, "up") == 0;
    down += std::strcmp(s, "down") == 0;
  }
  // Down first; std::map already orders by address, and the sort is stable.
  std::stable_sort(order.begin(), order.end(), [](const auto* a, const auto* b) {
    return std::strcmp(state(a->second), "down") == 0 && std::strcmp(state(b->second), "down") != 0;
  });
  nlohmann::json list = nlohmann::json::array();
  for (size_t i = 0; i < order.size() && i < limit; ++i) {
    const auto& [agent, e] = *order[i];
    nlohmann::json j = {
        {"agent", agent}, {"state", state(e)}, {"tunnels", e.tunnels}, {"since", e.since_ms}};
    if (e.rtt_ms) j["rtt_ms"] = *e.rtt_ms;
    if (!e.last_error.empty()) j["last_error"] = e.last_error;
    list.push_back(std::move(j));
  }
  return {{"up", up}, {"down", down}, {"idle", agents_.size() - up - down}, {"list", list}};
}

}  // namespace coilgun::edge
