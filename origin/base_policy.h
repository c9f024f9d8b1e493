#pragma once
// The base policy (proto/PROTOCOL.md §6): which versions the agent keeps as bases for later
// deltas, per cache key on one worker. At most one base per key that no request has listed back
// yet (unconfirmed); one not listed back within kPendingBaseMs is taken as lost (the exchange
// failed, the edge evicted it), and a new one may be claimed. And while other exchanges for the
// key run, a base is kept at least kMinBaseAgeMs, so queued work still finds the bases it
// listed.
//
// Time comes in as an argument, as for HandshakeGate: |now_ms| is a monotonic clock in
// milliseconds (the worker's loop time), so tests drive it.
//
// Ownership: one per AgentWorker, declared before its links so that it outlives the exchanges
// on them. An exchange holds its key's state for its life: key_started() counts it in
// |running|, and the exchange takes itself off when it is destroyed. Keys no exchange runs for,
// whose base is old, are swept when an exchange starts (see kKeySweep). Threads: the worker's
// loop only.

#include <cstddef>
#include <cstdint>
#include <memory>
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
  // and how many exchanges for the key are running. An exchange holds its key's state for its
  // life (running counts it).
  struct KeyState {
    proto::VersionId base;
    uint64_t since_ms = 0;  // 0: no base made yet.
    bool confirmed = true;
    uint32_t running = 0;
  };

  // Counts a new exchange for |key| whose request listed |held|, at |now_ms|, and returns the
  // key's state. The caller takes one off |running| when the exchange ends.
  std::shared_ptr<KeyState> key_started(const std::string& key,
                                        std::span<const proto::VersionId> held, uint64_t now_ms);
  // Whether version |id| may become the key's base at |now_ms|; if so records it (unconfirmed).
  // At most one unconfirmed base; and while other exchanges for the key run, a base is kept
  // at least kMinBaseAgeMs, so queued work still finds the bases it listed.
  bool claim_base(KeyState& key, proto::VersionId id, uint64_t now_ms);

 private:
  std::unordered_map<std::string, std::shared_ptr<KeyState>> keys_;
  size_t keys_sweep_at_ = kKeySweep;
};

}  // namespace coilgun::origin
