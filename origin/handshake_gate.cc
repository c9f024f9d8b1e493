#include "origin/handshake_gate.h"

namespace coilgun::origin {

HandshakeGate::Slot& HandshakeGate::Slot::operator=(Slot&& other) noexcept {
  if (this != &other) {
    release();
    gate_ = std::exchange(other.gate_, nullptr);
  }
  return *this;
}

void HandshakeGate::Slot::release() {
  if (gate_ == nullptr) {
    return;
  }
  gate_->pending_.fetch_sub(1, std::memory_order_relaxed);
  gate_ = nullptr;
}

HandshakeGate::Slot HandshakeGate::try_enter(uint32_t limit) {
  uint32_t n = pending_.load(std::memory_order_relaxed);
  do {
    if (n >= limit) {
      return Slot();
    }
  } while (!pending_.compare_exchange_weak(n, n + 1, std::memory_order_relaxed));
  return Slot(this);
}

}  // namespace coilgun::origin
