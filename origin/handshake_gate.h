#pragma once
// The bound on tunnel connections still in the TLS handshake ([tunnel] max_pending_handshakes):
// one gate per process, shared by every worker, so the limit is per process whatever the
// number of workers. A worker asks for a slot when it accepts a connection and closes the
// connection at once, before any TLS work, when none is left; the slot is given back when the
// connection is ready (TLS done, peer authenticated) or closed. Established tunnels hold no
// slot. Slots are also counted per source address ([tunnel] max_pending_per_source), so that
// one host cannot take them all; when the process-wide limit is reached the worker closes its
// own oldest pending connection to make room (AgentWorker), so a flood of silent connections
// cannot lock real edges out (issue #10).
//
// Refusals are reported for a rate-limited warning: at most one report per kReportIntervalMs,
// carrying how many connections were refused since the previous one.
//
// Threads: every member may be called from any thread. The gate must outlive its slots.

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "common/obs/log.h"

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
    Slot(Slot&& other) noexcept
        : gate_(std::exchange(other.gate_, nullptr)), source_(std::move(other.source_)) {}
    Slot& operator=(Slot&& other) noexcept;
    ~Slot() { release(); }

    // True when this slot holds a place in its gate.
    explicit operator bool() const { return gate_ != nullptr; }
    // Gives the place back (nothing when empty).
    void release();

   private:
    friend class HandshakeGate;
    Slot(HandshakeGate* gate, std::string source) : gate_(gate), source_(std::move(source)) {}
    HandshakeGate* gate_ = nullptr;
    std::string source_;  // Counted per source too, unless empty.
  };

  // Why try_enter() gave an empty Slot.
  enum class Refusal : uint8_t {
    kNone,
    kFull,    // |limit| connections are pending.
    kSource,  // |per_source| of them come from this source.
  };

  HandshakeGate() = default;
  HandshakeGate(const HandshakeGate&) = delete;
  HandshakeGate& operator=(const HandshakeGate&) = delete;

  // A place for one more pending connection from |source| (an address; empty: not counted per
  // source), or an empty Slot when |limit| connections are pending already, or |per_source| of
  // them from |source|; |why| (when not null) says which. The limits are read per call, so a
  // reload that changes them applies to the next connection (lowering one refuses new
  // connections until enough pending ones are done).
  Slot try_enter(uint32_t limit, std::string_view source = {}, uint32_t per_source = UINT32_MAX,
                 Refusal* why = nullptr);
  // How many connections hold a slot now.
  uint32_t pending() const { return pending_.load(std::memory_order_relaxed); }

  // Counts one refused connection at |now_ms| (a monotonic clock in milliseconds). Returns how
  // many were refused since the last report, this one included, when a report is due (the
  // first refusal, then at most one per kReportIntervalMs); else 0: do not log now.
  uint64_t refused(uint64_t now_ms) { return refusals_.occurred(now_ms); }

 private:
  std::mutex mutex_;  // Guards the counts (pending_ is also read without it).
  std::atomic<uint32_t> pending_{0};
  std::unordered_map<std::string, uint32_t> per_source_;
  log::ReportLimiter refusals_{kReportIntervalMs};
};

}  // namespace coilgun::origin
