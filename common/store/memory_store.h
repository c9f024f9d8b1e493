#pragma once
// The embedded tier of the version store (common/store/version_store.h): everything in process
// memory. Internal to common/store: daemons get it from make_version_store(); tests and the
// tiers built on it include it.

#include <cstddef>
#include <cstdint>
#include <list>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/store/version_store.h"

namespace coilgun {

// The embedded tier: everything in process memory, shared by all workers behind one mutex
// (every operation is a few map and list steps; no callback runs and no index is built while
// the mutex is held). Every method may be called from any thread at once.
//
// Budget. The store charges each distinct blob memory_bytes() + kBlobOverheadBytes and each
// key key.size() + kKeyOverheadBytes, so that many keys sharing one small body (or an empty
// one) are bounded too. A blob's index may be built after it was stored; the store re-reads
// memory_bytes() whenever it touches the blob (put, lookup hit) and charges the growth then.
// A lookup for Want::kPrepared builds the index itself (outside the lock), so the charge is
// exact; an index a caller builds otherwise is charged at the blob's next touch.
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

  explicit MemoryVersionStore(VersionStoreOptions options = {});
  ~MemoryVersionStore() override;
  MemoryVersionStore(const MemoryVersionStore&) = delete;
  MemoryVersionStore& operator=(const MemoryVersionStore&) = delete;

  // VersionStore: answers with held() and find(), taken now, on |loop|'s next turn.
  Pending versions(uv::Loop& loop, std::string_view key, VersionsCallback done) override;
  Pending lookup(uv::Loop& loop, std::string_view key, std::span<const proto::VersionId> ids,
                 Want want, LookupCallback done) override;

  // As VersionStore::put. If a blob with the same id is already stored (under any key), the
  // stored copy is kept and |blob| is not retained. Refused (counted in rejects, the store left
  // as it was) when |blob| is null or when the blob and key charges alone exceed max_bytes.
  // Makes |key| the most recently used, then evicts down to the budget.
  void put(std::string_view key, BlobRef blob) override;

  VersionStoreStats stats() const override;

  // The same answers as versions() and lookup(), now, on the calling thread (what a tier in
  // front of a shared one, and the tests, use). find() with kPrepared builds the blob's index
  // first if it is not built yet: a pass over the blob, outside the lock.
  std::vector<proto::VersionId> held(std::string_view key);
  BlobRef find(std::string_view key, std::span<const proto::VersionId> ids, Want want);

  const VersionStoreOptions& options() const { return options_; }

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

  const VersionStoreOptions options_;
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
