#pragma once
// The base policy (proto/PROTOCOL.md §6): which versions the agent keeps as bases for later
// deltas, per cache key. At most one base per key that no request has listed back yet
// (unconfirmed); one not listed back within kPendingBaseMs is taken as lost (the exchange
// failed, the edge evicted it), and a new one may be claimed. And while other exchanges for the
// key run, a base is kept at least kMinBaseAgeMs, so queued work still finds the bases it
// listed.
//
// One policy per process, shared by every worker (issue #12: with one per worker, a worker that
// had not seen a key's latest base kept no new one until a second had passed, so the same
// sequence of requests crossed in different sizes depending on which worker took each one).
// A sequential client always gets a delta against the version just before: its request lists
// the base the previous exchange claimed (confirming it), and the previous exchange stopped
// counting as running when it finished (Hold::release), not when its object is deleted a loop
// turn later.
//
// Time comes in as an argument, as for HandshakeGate: |now_ms| is a monotonic clock in
// milliseconds (a worker's loop time, CLOCK_MONOTONIC based), so tests drive it. Loops cache
// their time per turn, so one worker's now may be a little behind the time another recorded:
// ages are taken as 0 then.
//
// Ownership: one per agent process (origin::Shared), outliving every worker and exchange. An
// exchange holds its key's state through a Hold for its life; the Hold takes itself off when
// released or destroyed. Keys no exchange runs for, whose base is old, are swept when an
// exchange starts (see kKeySweep). Threads: any; every method takes the policy's mutex.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>

#include "proto/version_id.h"

namespace coilgun::origin {

class BasePolicy {
 public:
  // A base not listed back after this long is taken as lost (the exchange failed, the edge
  // evicted it): a new one may be claimed.
  static constexpr uint64_t kPendingBaseMs = 1000;
  static constexpr uint64_t kMinBaseAgeMs = 1000;
  // Idle, old entries are swept once this many keys are held (and again when that doubled).
  static constexpr size_t kKeySweep = 4096;

  // Per cache key: the newest base it made, since when, whether a request has listed it back,
  // and how many exchanges for the key are running. Guarded by the policy's mutex.
  struct KeyState {
    proto::VersionId base;
    uint64_t since_ms = 0;  // 0: no base made yet.
    bool confirmed = true;
    uint32_t running = 0;
  };

  // An exchange's part in its key's state: counts it as running until release() (or its
  // destruction). Move-only; an empty Hold (default, moved from, or released) counts nothing.
  class Hold {
   public:
    Hold() = default;
    Hold(Hold&& other) noexcept;
    Hold& operator=(Hold&& other) noexcept;
    ~Hold() { release(); }

    // The exchange is over: it no longer counts as running. Idempotent.
    void release();
    explicit operator bool() const { return policy_ != nullptr; }
    // The key's state's identity (keeping it alive), for tests: Holds of one key give equal
    // ids; a key swept and started again gets a new one.
    std::shared_ptr<const void> key_id() const { return state_; }

   private:
    friend class BasePolicy;
    Hold(BasePolicy* policy, std::shared_ptr<KeyState> state)
        : policy_(policy), state_(std::move(state)) {}
    BasePolicy* policy_ = nullptr;
    std::shared_ptr<KeyState> state_;
  };

  // Counts a new exchange for |key| whose request listed |held|, at |now_ms|: a request that
  // lists the key's base confirms it.
  Hold key_started(const std::string& key, std::span<const proto::VersionId> held, uint64_t now_ms);
  // Whether version |id| may become the key's base at |now_ms|; if so records it (unconfirmed).
  // At most one unconfirmed base; and while other exchanges for the key run, a base is kept
  // at least kMinBaseAgeMs, so queued work still finds the bases it listed. An empty |hold| may
  // claim nothing.
  bool claim_base(const Hold& hold, proto::VersionId id, uint64_t now_ms);
  // A copy of the key's state as it is now (for tests and diagnostics).
  KeyState state(const Hold& hold) const;

 private:
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<KeyState>> keys_;  // Guarded by mu_.
  size_t keys_sweep_at_ = kKeySweep;                                 // Guarded by mu_.
};

}  // namespace coilgun::origin
