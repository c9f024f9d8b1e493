#pragma once
// The bound on tunnel connections still in the TLS handshake ([tunnel] max_pending_handshakes):
// one gate per process, shared by every worker, so the limit is per process whatever the
// number of workers. A worker asks for a slot when it accepts a connection and closes the
// connection at once, before any TLS work, when none is left; the slot is given back when the
// connection is ready (TLS done, peer authenticated) or closed. Established tunnels hold no
// slot.
//
// Refusals are reported for a rate-limited warning: at most one report per kReportIntervalMs,
// carrying how many connections were refused since the previous one.
//
// Threads: every member may be called from any thread. The gate must outlive its slots.

#include <atomic>
#include <cstdint>
#include <utility>

#include "common/log.h"

namespace coilgun::origin {

class HandshakeGate {
 public:
  // The shortest time between two refusal reports.
  static constexpr uint64_t kReportIntervalMs = 1000;

  // One pending connection counted by a gate. Move-only; gives its place back when released,
  // assigned over or destroyed. An empty Slot (default-constructed, or refused) holds nothing.
  class Slot {
   public:
    Slot() = default;
    Slot(Slot&& other) noexcept : gate_(std::exchange(other.gate_, nullptr)) {}
    Slot& operator=(Slot&& other) noexcept;
    ~Slot() { release(); }

    // True when this slot holds a place in its gate.
    explicit operator bool() const { return gate_ != nullptr; }
    // Gives the place back (nothing when empty).
    void release();

   private:
    friend class HandshakeGate;
    explicit Slot(HandshakeGate* gate) : gate_(gate) {}
    HandshakeGate* gate_ = nullptr;
  };

  HandshakeGate() = default;
  HandshakeGate(const HandshakeGate&) = delete;
  HandshakeGate& operator=(const HandshakeGate&) = delete;

  // A place for one more pending connection, or an empty Slot when |limit| connections are
  // pending already. |limit| is read per call, so a reload that changes it applies to the next
  // connection (lowering it refuses new connections until enough pending ones are done).
  Slot try_enter(uint32_t limit);
  // How many connections hold a slot now.
  uint32_t pending() const { return pending_.load(std::memory_order_relaxed); }

  // Counts one refused connection at |now_ms| (a monotonic clock in milliseconds). Returns how
  // many were refused since the last report, this one included, when a report is due (the
  // first refusal, then at most one per kReportIntervalMs); else 0: do not log now.
  uint64_t refused(uint64_t now_ms) { return refusals_.occurred(now_ms); }

 private:
  std::atomic<uint32_t> pending_{0};
  log::ReportLimiter refusals_{kReportIntervalMs};
};

}  // namespace coilgun::origin
