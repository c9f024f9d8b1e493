#include "origin/base_policy.h"

#include <algorithm>

namespace coilgun::origin {

std::shared_ptr<BasePolicy::KeyState> BasePolicy::key_started(
    const std::string& key, std::span<const proto::VersionId> held, uint64_t now_ms) {
  // Swept when it has doubled since the last sweep: amortised O(1) per key, even when little
  // can go (many keys with fresh bases).
  if (keys_.size() >= keys_sweep_at_) {
    std::erase_if(keys_, [now_ms](const auto& e) {
      return e.second->running == 0 &&
             now_ms - e.second->since_ms >= std::max(kPendingBaseMs, kMinBaseAgeMs);
    });
    keys_sweep_at_ = std::max(kKeySweep, 2 * keys_.size());
  }
  auto [it, added] = keys_.try_emplace(key);
  if (added) it->second = std::make_shared<KeyState>();
  KeyState& k = *it->second;
  if (!k.confirmed && std::find(held.begin(), held.end(), k.base) != held.end()) k.confirmed = true;
  ++k.running;
  return it->second;
}

bool BasePolicy::claim_base(KeyState& k, proto::VersionId id, uint64_t now_ms) {
  if (!k.confirmed && now_ms - k.since_ms < kPendingBaseMs) return false;
  if (k.running > 1 && k.since_ms != 0 && now_ms - k.since_ms < kMinBaseAgeMs) return false;
  k.base = id;
  k.since_ms = now_ms;
  k.confirmed = false;
  return true;
}

}  // namespace coilgun::origin
