#pragma once
// The version store: per cache key, the newest few versions of a body, named by VersionId.
//
// Both daemons keep one. The edge asks it which versions of a URL it holds (versions()), tells
// the agent, and fetches the base the agent's delta names (lookup()); after verifying a rebuilt
// body it records it as the newest version (put()). The agent looks up the base the edge named
// and stores the bodies its base policy lets become bases (origin/base_policy.h). One store is
// shared by all worker loops of a process.
//
// Three rules shape it:
//  * Versions belong to a key. A lookup finds a blob only if that key holds its id, even when
//    another key holds the same bytes: content of one namespace is never a base for another.
//  * Blobs are shared by id. Two keys that hold the same body hold one stored copy.
//  * The store is bounded by bytes, evicting the oldest version of the least recently used key.
//
// VersionStore is the interface, made by make_version_store() from the [store] settings; the
// tiers behind it are internal (the in-process memory tier: common/store/memory_store.h). The
// asking calls (versions(), lookup()) answer through a callback on a later turn of the caller's
// loop, never inside the call, and the Pending they return cancels the answer: a tier may ask a
// server on another thread, and a caller never has to guard against its own deletion. Every
// tier must pass the contract suite in tests/unit/common/store/version_store_test.cc (one tier
// type per entry in its list); what one tier does beyond it is tested in that tier's own file.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/net/loop.h"
#include "proto/delta.h"
#include "proto/status.h"
#include "proto/version_id.h"

namespace coilgun {

class Blob;

// A shared, immutable version. Whoever holds a BlobRef keeps the blob (bytes and index) alive,
// even after every store has dropped it.
using BlobRef = std::shared_ptr<const Blob>;

// One immutable version of a body: its bytes, its id and, built on first use, the index the
// delta encoder needs to use it as a base. Every method is const and safe to call from any
// thread at once; a Blob is only ever handled through a BlobRef.
class Blob {
  struct Passkey {
    explicit Passkey() = default;
  };

 public:
  // Takes |bytes| and hashes them once to name the blob. Any thread.
  static BlobRef make(std::vector<uint8_t> bytes);
  // Takes |bytes| named |id|, which must be proto::VersionId::of(bytes): use it when the id is
  // already known (the edge has just checked a rebuilt body against it). Not re-checked.
  static BlobRef make(std::vector<uint8_t> bytes, proto::VersionId id);

  // For make() only (the passkey cannot be named elsewhere).
  Blob(Passkey, std::vector<uint8_t> bytes, proto::VersionId id);
  Blob(const Blob&) = delete;
  Blob& operator=(const Blob&) = delete;

  // The body. Valid for the life of this Blob.
  std::span<const uint8_t> bytes() const { return bytes_; }
  size_t size() const { return bytes_.size(); }
  proto::VersionId id() const { return id_; }

  // The base index for the delta encoder, built on the first call (one pass over the bytes;
  // 2 to 4 bytes of memory per body byte, see proto::PreparedBase) and returned as is
  // afterwards. Concurrent first calls build it once: the others wait and all get the same
  // object. Valid for the life of this Blob. Only the origin agent needs it; the edge never
  // calls it. Any thread, but the first call costs a pass over the bytes: call it where that
  // may block.
  const proto::PreparedBase& prepared() const;

  // True once prepared() has built the index. Any thread.
  bool is_prepared() const { return prepared_ready_.load(std::memory_order_acquire); }

  // Heap bytes this blob accounts for: its body, plus the index once built. Grows once, when
  // the index is built. Any thread.
  size_t memory_bytes() const;

 private:
  const std::vector<uint8_t> bytes_;  // Declared first: the index references it.
  const proto::VersionId id_;
  mutable std::once_flag prepare_once_;
  mutable std::optional<proto::PreparedBase> prepared_;  // Written once, inside prepare_once_.
  mutable std::atomic<bool> prepared_ready_{false};      // Set after prepared_ is written.
};

// What a store holds and has done, for /stats and /metrics. A snapshot: counters only grow.
struct VersionStoreStats {
  uint64_t keys = 0;       // Keys holding at least one version.
  uint64_t versions = 0;   // (key, version) pairs held; at most keys x max_versions_per_key.
  uint64_t blobs = 0;      // Distinct blobs held (a blob shared by several keys counts once).
  uint64_t bytes = 0;      // Bytes charged against the budget (see MemoryVersionStore).
  uint64_t hits = 0;       // lookup() calls that found the blob under the key.
  uint64_t misses = 0;     // lookup() calls that did not.
  uint64_t inserts = 0;    // put() calls that recorded a version (including re-puts).
  uint64_t rejects = 0;    // put() calls refused: null blob, or larger than the whole budget.
  uint64_t evictions = 0;  // Versions dropped, for any reason (K or the byte budget).
  uint64_t budget_evictions = 0;  // The part of |evictions| dropped to meet the byte budget.
  // The shared tier (memcached); all 0 without one.
  uint64_t shared_hits = 0;     // Blobs memcached gave that memory had not: a lookup's, or
                                // the newest of a key versions() listed (SharedStore).
  uint64_t shared_errors = 0;   // memcached requests that failed or timed out.
  uint64_t shared_corrupt = 0;  // Items that failed their check (a blob not matching its id, an
                                // index that does not parse): not used.
  uint64_t shared_writes = 0;   // Versions written to memcached (blob and index).
  uint64_t shared_dropped = 0;  // Requests not sent: queue full, or waited past the timeout.
};

// A store call whose answer is still to come. Destroying it, assigning over it or cancel()
// means the callback never runs (and is destroyed, with what it holds, later). Move-only; made,
// cancelled and destroyed on the calling loop's thread.
class Pending {
 public:
  Pending() = default;
  ~Pending() { cancel(); }
  Pending(Pending&& other) noexcept : live_(std::move(other.live_)) {}
  Pending& operator=(Pending&& other) noexcept {
    if (this != &other) {
      cancel();
      live_ = std::move(other.live_);
    }
    return *this;
  }
  Pending(const Pending&) = delete;
  Pending& operator=(const Pending&) = delete;

  void cancel() {
    if (live_) *live_ = false;
    live_.reset();
  }
  // True until the callback ran or the call was cancelled.
  bool active() const { return live_ != nullptr && *live_; }

  // For tiers. A new pending call and its delivery flag: the tier's delivery, on the caller's
  // loop thread, runs the callback only if take(flag) is true.
  static Pending make(std::shared_ptr<bool>& flag) {
    Pending p;
    p.live_ = std::make_shared<bool>(true);
    flag = p.live_;
    return p;
  }
  // True once for a flag whose call is still wanted, and marks it answered.
  static bool take(const std::shared_ptr<bool>& flag) {
    if (!*flag) return false;
    *flag = false;
    return true;
  }

 private:
  std::shared_ptr<bool> live_;
};

// The version store interface. One store is shared by all worker loops of a process: every
// method may be called from any thread at once. A callback runs on the loop passed with its
// call, which must be the calling thread's own loop, and may call back into the store.
class VersionStore {
 public:
  virtual ~VersionStore() = default;

  // What a lookup hands out: the bytes alone (the edge decodes against them), or the blob with
  // its base index built (Blob::prepared(); the agent encodes against it). kPrepared builds the
  // index off the caller's critical section and charges it to the store that holds the blob.
  enum class Want { kBytes, kPrepared };

  using VersionsCallback = std::function<void(std::vector<proto::VersionId>)>;
  // Called once with the blob, or with nullptr on a miss.
  using LookupCallback = std::function<void(BlobRef)>;

  // Answers with the ids |key| holds, newest first: at most the store's K, empty for an unknown
  // key (or when no tier that knows could be asked in time). Counts as a use of |key| for
  // recency.
  virtual Pending versions(uv::Loop& loop, std::string_view key, VersionsCallback done) = 0;

  // Answers with the first of |ids| (in the order given) that |key| holds, or nullptr when it
  // holds none of them. A blob held only by another key does not count: content of one
  // namespace is never a base for another. One call counts one hit or one miss.
  virtual Pending lookup(uv::Loop& loop, std::string_view key,
                         std::span<const proto::VersionId> ids, Want want, LookupCallback done) = 0;

  // Records |blob| as the newest version of |key|. If |key| already holds that id, the id just
  // becomes the newest (never a duplicate). Beyond the store's K, the key's oldest version is
  // dropped. The store keeps its own reference; the caller may keep using |blob|. A null |blob|
  // is refused: counted in rejects, nothing else changes. Never waits for a server: what goes
  // to a shared tier goes in the background.
  virtual void put(std::string_view key, BlobRef blob) = 0;

  // Returns once every put() made before the call reached every tier (a shared tier writes in
  // the background). Any thread; for tests and benchmarks.
  virtual void flush() {}

  // Returns a snapshot of the counters. Any thread.
  virtual VersionStoreStats stats() const = 0;
};

// For tiers whose answer is ready now: runs done(value) on |loop|'s next turn unless the
// returned Pending was cancelled by then. Loop thread only.
template <typename Callback, typename T>
Pending answer_later(uv::Loop& loop, Callback done, T value) {
  std::shared_ptr<bool> flag;
  Pending pending = Pending::make(flag);
  loop.post([flag, done = std::move(done), value = std::move(value)]() mutable {
    if (Pending::take(flag)) done(std::move(value));
  });
  return pending;
}

// One memcached server of the shared tier.
struct MemcachedServer {
  std::string host;  // A name or an address (IPv6 without brackets).
  uint16_t port = 11211;
  std::string str() const;  // "host:port", "[::1]:port".
  friend bool operator==(const MemcachedServer&, const MemcachedServer&) = default;
};

// What [store] configures.
struct VersionStoreOptions {
  // K: versions kept per key. 0 is taken as 1.
  size_t max_versions_per_key = 4;
  // The memory tier's budget for everything it charges (blobs, their indexes, key and blob
  // bookkeeping). With a shared tier it is the tier in front.
  size_t max_bytes = size_t{256} << 20;

  // The shared tier, behind the memory tier; none when empty (common/store/shared_store.h).
  std::vector<MemcachedServer> memcached{};
  // What one memcached request may take (connect, send, wait), and how long a server that
  // failed stays out of the ring before it is tried again.
  std::chrono::milliseconds memcached_timeout{100};
  std::chrono::milliseconds memcached_retry{2000};
  // The window in which a key asked for often is answered by memory alone once memcached
  // answered a read of it (shared_store.h, versions()); 0: never (every call reads the index).
  // 20 ms: at 50 ms four edges taking turns on a page that changed on every request missed
  // each other's versions (tests/bench/RESULTS.md); the throughput it saves was the same.
  std::chrono::milliseconds memcached_index_fresh{20};
  // Larger bodies stay in memory only (memcached's item size, -I, is 1 MiB by default).
  size_t memcached_max_item = 1000 * 1000;
  // SASL credentials (memcached -S, which speaks the binary protocol only); none when the
  // username is empty.
  std::string memcached_username{};
  std::string memcached_password{};
  // Names the daemons that share versions: items are keyed by it, so daemons with the same
  // scope share what they store and daemons with different ones never see each other's.
  std::string scope = "default";
};

// The store the options describe. Any thread.
std::unique_ptr<VersionStore> make_version_store(const VersionStoreOptions& options);

// Asks each of |options|' memcached servers for its version (with its timeout): one line per
// server, "host:port" and why it did not answer ("" where it did). For --check.
std::vector<std::pair<std::string, std::string>> probe_memcached(
    const VersionStoreOptions& options);

}  // namespace coilgun
