#include "origin/handshake_gate.h"

namespace coilgun::origin {

HandshakeGate::Slot& HandshakeGate::Slot::operator=(Slot&& other) noexcept {
  if (this != &other) {
    release();
    gate_ = std::exchange(other.gate_, nullptr);
    source_ = std::move(other.source_);
  }
  return *this;
}

void HandshakeGate::Slot::release() {
  if (gate_ == nullptr) {
    return;
  }
  {
    std::lock_guard lock(gate_->mutex_);
    gate_->pending_.fetch_sub(1, std::memory_order_relaxed);
    if (!source_.empty()) {
      auto it = gate_->per_source_.find(source_);
      if (it != gate_->per_source_.end() && --it->second == 0) gate_->per_source_.erase(it);
    }
  }
  gate_ = nullptr;
  source_.clear();
}

// Accepts are rare next to requests, and a mutex keeps the two counts in step.
HandshakeGate::Slot HandshakeGate::try_enter(uint32_t limit, std::string_view source,
                                             uint32_t per_source, Refusal* why) {
  Refusal refusal = Refusal::kNone;
  std::lock_guard lock(mutex_);
  uint32_t* from_source = nullptr;
  if (!source.empty()) {
    auto it = per_source_.find(std::string(source));
    if (it != per_source_.end()) from_source = &it->second;
  }
  if (from_source != nullptr && *from_source >= per_source) {
    refusal = Refusal::kSource;
  } else if (pending_.load(std::memory_order_relaxed) >= limit) {
    refusal = Refusal::kFull;
  }
  if (why != nullptr) *why = refusal;
  if (refusal != Refusal::kNone) return Slot();
  pending_.fetch_add(1, std::memory_order_relaxed);
  if (!source.empty()) ++per_source_[std::string(source)];
  return Slot(this, std::string(source));
}

}  // namespace coilgun::origin
