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
// VersionStore is the interface; MemoryVersionStore is the embedded in-process tier. A shared
// tier (memcached) can implement the same interface: its lookup() completes later through the
// callback, while the key index (versions()) stays local and synchronous in every tier. Every
// tier must pass the contract suite in tests/unit/common/store/version_store_test.cc (one factory
// type per tier in its list); what one tier does beyond it is tested in that tier's own file.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "proto/delta.h"
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
};

// The version store interface. Implementations are shared by all worker loops of a process:
// every method may be called from any thread at once.
class VersionStore {
 public:
  virtual ~VersionStore() = default;

  // Returns the ids |key| holds, newest first (at most the store's K; empty for an unknown
  // key). Synchronous in every tier: each keeps the key index locally. Counts as a use of
  // |key| for recency.
  virtual std::vector<proto::VersionId> versions(std::string_view key) = 0;

  // Called exactly once with the blob, or with nullptr on a miss. The callee owns its copy of
  // the BlobRef.
  using LookupCallback = std::function<void(BlobRef)>;

  // Finds the blob named |id| if, and only if, |key| holds it (a blob held only by another key
  // is a miss), and passes it to |done|; passes nullptr on a miss. |done| must not be empty.
  //
  // When |done| runs depends on the tier. An asynchronous tier runs it later, on the calling
  // thread's event loop. MemoryVersionStore runs it on the calling thread before lookup()
  // returns. Callers must handle both. Re-entrancy hazard: with the memory tier, |done| runs
  // inside the caller's own call to lookup(), so the caller must be in a consistent state
  // before calling lookup() and must not rely on code after the call running before |done|.
  // The store itself holds no lock while |done| runs, so |done| may call back into the store.
  virtual void lookup(std::string_view key, proto::VersionId id, LookupCallback done) = 0;

  // Records |blob| as the newest version of |key|. If |key| already holds that id, the id just
  // becomes the newest (never a duplicate). Beyond the store's K, the key's oldest version is
  // dropped. The store keeps its own reference; the caller may keep using |blob|. A null |blob|
  // is refused: counted in rejects, nothing else changes.
  virtual void put(std::string_view key, BlobRef blob) = 0;

  // Returns a snapshot of the counters. Any thread.
  virtual VersionStoreStats stats() const = 0;
};

// Sizing of a MemoryVersionStore.
struct MemoryVersionStoreOptions {
  // K: versions kept per key. 0 is taken as 1.
  size_t max_versions_per_key = 4;
  // Budget for everything charged (blobs, their indexes, key and blob bookkeeping).
  size_t max_bytes = size_t{256} << 20;
  // Build each blob's base index inside lookup() (outside the lock) before handing it out, so
  // the index is charged against the budget before anyone uses it. Set it on the origin agent,
  // which looks blobs up only to use them as bases; leave it off on the edge.
  bool prepare_on_lookup = false;
};

// The embedded tier: everything in process memory, shared by all workers behind one mutex
// (every operation is a few map and list steps; no callback runs and no index is built while
// the mutex is held). Every method may be called from any thread at once.
//
// Budget. The store charges each distinct blob memory_bytes() + kBlobOverheadBytes and each
// key key.size() + kKeyOverheadBytes, so that many keys sharing one small body (or an empty
// one) are bounded too. A blob's index may be built after it was stored; the store re-reads
// memory_bytes() whenever it touches the blob (put, lookup hit) and charges the growth then.
// With prepare_on_lookup the store builds the index itself, so the charge is exact; without
// it, an index a caller builds is charged at the blob's next touch.
//
// Eviction. After any operation that grew the charge, while it is over max_bytes, the store
// drops the oldest version of the least recently used key (recency: put, lookup hit, or
// versions() on the key). A blob is freed when no key holds it any more; BlobRefs already
// handed out stay valid. The version just put is the newest of the most recent key, so it
// goes last: only if it alone (with its key) is over the budget, which put() refuses up front
// (a reject) unless its index grew afterwards.
class MemoryVersionStore final : public VersionStore {
 public:
  // Charged per key on top of the key's bytes: map and list nodes, string and id-list headers
  // and the id list itself at the default K. An estimate, fixed so that tests can model it.
  static constexpr size_t kKeyOverheadBytes = 192;
  // Charged per distinct blob on top of memory_bytes(): the Blob object, its control block and
  // its node in the blob map. An estimate, fixed so that tests can model it.
  static constexpr size_t kBlobOverheadBytes = 256;

  explicit MemoryVersionStore(MemoryVersionStoreOptions options = {});
  ~MemoryVersionStore() override;
  MemoryVersionStore(const MemoryVersionStore&) = delete;
  MemoryVersionStore& operator=(const MemoryVersionStore&) = delete;

  std::vector<proto::VersionId> versions(std::string_view key) override;

  // Runs |done| before returning, on the calling thread, with no lock held (see VersionStore).
  // A hit makes |key| the most recently used. With prepare_on_lookup, builds the blob's index
  // first if it is not built yet (a pass over the blob on the calling thread).
  void lookup(std::string_view key, proto::VersionId id, LookupCallback done) override;

  // As VersionStore::put. If a blob with the same id is already stored (under any key), the
  // stored copy is kept and |blob| is not retained. Refused (counted in rejects, the store left
  // as it was) when |blob| is null or when the blob and key charges alone exceed max_bytes.
  // Makes |key| the most recently used, then evicts down to the budget.
  void put(std::string_view key, BlobRef blob) override;

  VersionStoreStats stats() const override;

  const MemoryVersionStoreOptions& options() const { return options_; }

 private:
  struct KeyEntry {
    std::string key;
    std::vector<proto::VersionId> ids;  // Newest first; 1..K entries while listed.
  };
  struct BlobEntry {
    BlobRef blob;
    size_t refs = 0;    // Keys holding this id.
    size_t charge = 0;  // What bytes_ holds for this blob.
  };
  using Lru = std::list<KeyEntry>;  // Front: most recently used.

  static size_t key_charge(std::string_view key) { return key.size() + kKeyOverheadBytes; }
  static size_t blob_charge(const Blob& blob) { return blob.memory_bytes() + kBlobOverheadBytes; }

  // The helpers below require mu_ held.
  // Moves |it| to the front of the LRU list.
  void touch(Lru::iterator it);
  // Re-reads the blob's memory_bytes() and charges any growth. Returns true if it grew.
  bool recharge(BlobEntry& entry);
  // Drops one reference to |id|, freeing the blob when it was the last.
  void release(proto::VersionId id);
  // Drops the oldest version of |it|, and the key itself when that was its last version.
  void drop_oldest(Lru::iterator it, bool for_budget);
  // Drops oldest versions of least recently used keys until bytes_ <= max_bytes.
  void evict_to_budget();

  const MemoryVersionStoreOptions options_;
  const size_t max_versions_;  // options_.max_versions_per_key, at least 1.

  mutable std::mutex mu_;
  // Everything below is guarded by mu_.
  Lru lru_;
  std::unordered_map<std::string_view, Lru::iterator> keys_;  // Views into lru_ nodes' keys.
  std::unordered_map<proto::VersionId, BlobEntry, proto::VersionIdHash> blobs_;
  size_t bytes_ = 0;
  size_t versions_ = 0;
  uint64_t hits_ = 0;
  uint64_t misses_ = 0;
  uint64_t inserts_ = 0;
  uint64_t rejects_ = 0;
  uint64_t evictions_ = 0;
  uint64_t budget_evictions_ = 0;
};

}  // namespace coilgun
