#include "origin/base_policy.h"

#include <algorithm>
#include <utility>

namespace coilgun::origin {
namespace {

// How long ago |since_ms| was at |now_ms|; 0 when another loop's cached time is ahead of ours.
uint64_t age(uint64_t now_ms, uint64_t since_ms) {
  return now_ms > since_ms ? now_ms - since_ms : 0;
}

}  // namespace

BasePolicy::Hold::Hold(Hold&& other) noexcept
    : policy_(std::exchange(other.policy_, nullptr)), state_(std::move(other.state_)) {}

BasePolicy::Hold& BasePolicy::Hold::operator=(Hold&& other) noexcept {
  if (this != &other) {
    release();
    policy_ = std::exchange(other.policy_, nullptr);
    state_ = std::move(other.state_);
  }
  return *this;
}

void BasePolicy::Hold::release() {
  if (policy_ == nullptr) return;
  {
    std::lock_guard lock(policy_->mu_);
    --state_->running;
  }
  policy_ = nullptr;
  state_.reset();
}

BasePolicy::Hold BasePolicy::key_started(const std::string& key,
                                         std::span<const proto::VersionId> held, uint64_t now_ms) {
  std::lock_guard lock(mu_);
  // Swept when it has doubled since the last sweep: amortised O(1) per key, even when little
  // can go (many keys with fresh bases).
  if (keys_.size() >= keys_sweep_at_) {
    std::erase_if(keys_, [now_ms](const auto& e) {
      return e.second->running == 0 &&
             age(now_ms, e.second->since_ms) >= std::max(kPendingBaseMs, kMinBaseAgeMs);
    });
    keys_sweep_at_ = std::max(kKeySweep, 2 * keys_.size());
  }
  auto [it, added] = keys_.try_emplace(key);
  if (added) it->second = std::make_shared<KeyState>();
  KeyState& k = *it->second;
  if (!k.confirmed && std::find(held.begin(), held.end(), k.base) != held.end()) k.confirmed = true;
  ++k.running;
  return Hold(this, it->second);
}

bool BasePolicy::claim_base(const Hold& hold, proto::VersionId id, uint64_t now_ms) {
  if (!hold) return false;
  std::lock_guard lock(mu_);
  KeyState& k = *hold.state_;
  const uint64_t base_age = age(now_ms, k.since_ms);
  if (!k.confirmed && base_age < kPendingBaseMs) return false;
  if (k.running > 1 && k.since_ms != 0 && base_age < kMinBaseAgeMs) return false;
  k.base = id;
  k.since_ms = now_ms;
  k.confirmed = false;
  return true;
}

BasePolicy::KeyState BasePolicy::state(const Hold& hold) const {
  if (!hold) return {};
  std::lock_guard lock(mu_);
  return *hold.state_;
}

}  // namespace coilgun::origin
