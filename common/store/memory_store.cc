#include "common/store/memory_store.h"

#include <algorithm>
#include <utility>

namespace coilgun {

MemoryVersionStore::MemoryVersionStore(VersionStoreOptions options)
    : options_(options), max_versions_(std::max<size_t>(1, options.max_versions_per_key)) {}

MemoryVersionStore::~MemoryVersionStore() = default;

Pending MemoryVersionStore::versions(uv::Loop& loop, std::string_view key, VersionsCallback done) {
  return answer_later(loop, std::move(done), held(key));
}

Pending MemoryVersionStore::lookup(uv::Loop& loop, std::string_view key,
                                   std::span<const proto::VersionId> ids, Want want,
                                   LookupCallback done) {
  return answer_later(loop, std::move(done), find(key, ids, want));
}

std::vector<proto::VersionId> MemoryVersionStore::held(std::string_view key) {
  std::lock_guard lock(mu_);
  const auto it = keys_.find(key);
  if (it == keys_.end()) {
    return {};
  }
  touch(it->second);
  return it->second->ids;
}

BlobRef MemoryVersionStore::find(std::string_view key, std::span<const proto::VersionId> ids,
                                 Want want) {
  BlobRef found;
  {
    std::lock_guard lock(mu_);
    const auto kit = keys_.find(key);
    if (kit != keys_.end()) {
      const auto& held = kit->second->ids;
      for (const proto::VersionId& id : ids) {
        if (std::find(held.begin(), held.end(), id) == held.end()) continue;
        auto& entry = blobs_.at(id);  // Every held id has an entry.
        found = entry.blob;
        touch(kit->second);
        if (recharge(entry)) {
          evict_to_budget();
        }
        break;
      }
    }
    ++(found ? hits_ : misses_);
  }
  if (found && want == Want::kPrepared && !found->is_prepared()) {
    // Built outside the lock: other workers keep going while this one reads the blob.
    (void)found->prepared();
    std::lock_guard lock(mu_);
    const auto bit = blobs_.find(found->id());
    if (bit != blobs_.end() && recharge(bit->second)) {
      evict_to_budget();
    }
  }
  return found;
}

void MemoryVersionStore::put(std::string_view key, BlobRef blob) {
  std::lock_guard lock(mu_);
  if (blob == nullptr) {
    ++rejects_;
    return;
  }
  const proto::VersionId id = blob->id();
  auto bit = blobs_.find(id);
  bool grew = false;
  if (bit != blobs_.end()) {
    grew = recharge(bit->second);
  }
  const size_t charge = bit != blobs_.end() ? bit->second.charge : blob_charge(*blob);
  // Checked without overflow: max_bytes may be anything up to SIZE_MAX.
  if (charge > options_.max_bytes || key_charge(key) > options_.max_bytes - charge) {
    ++rejects_;
    if (grew) {
      evict_to_budget();
    }
    return;
  }
  ++inserts_;

  auto kit = keys_.find(key);
  Lru::iterator entry;
  if (kit == keys_.end()) {
    lru_.push_front(KeyEntry{std::string(key), {}});
    entry = lru_.begin();
    keys_.emplace(std::string_view(entry->key), entry);
    bytes_ += key_charge(key);
  } else {
    entry = kit->second;
    touch(entry);
  }

  auto& ids = entry->ids;
  const auto pos = std::find(ids.begin(), ids.end(), id);
  if (pos != ids.end()) {
    std::rotate(ids.begin(), pos, pos + 1);  // Already held: it just becomes the newest.
  } else {
    ids.insert(ids.begin(), id);
    ++versions_;
    if (bit == blobs_.end()) {
      blobs_.emplace(id, BlobEntry{std::move(blob), 1, charge});
      bytes_ += charge;
    } else {
      ++bit->second.refs;
    }
    if (ids.size() > max_versions_) {
      drop_oldest(entry, /*for_budget=*/false);
    }
  }
  evict_to_budget();
}

VersionStoreStats MemoryVersionStore::stats() const {
  std::lock_guard lock(mu_);
  VersionStoreStats s;
  s.keys = keys_.size();
  s.versions = versions_;
  s.blobs = blobs_.size();
  s.bytes = bytes_;
  s.hits = hits_;
  s.misses = misses_;
  s.inserts = inserts_;
  s.rejects = rejects_;
  s.evictions = evictions_;
  s.budget_evictions = budget_evictions_;
  return s;
}

void MemoryVersionStore::touch(Lru::iterator it) { lru_.splice(lru_.begin(), lru_, it); }

bool MemoryVersionStore::recharge(BlobEntry& entry) {
  const size_t now = blob_charge(*entry.blob);
  if (now <= entry.charge) {  // Only the index is ever added; nothing shrinks.
    return false;
  }
  bytes_ += now - entry.charge;
  entry.charge = now;
  return true;
}

void MemoryVersionStore::release(proto::VersionId id) {
  const auto bit = blobs_.find(id);
  if (bit == blobs_.end()) {  // Not reached: every held id has an entry.
    return;
  }
  if (--bit->second.refs > 0) {
    return;
  }
  bytes_ -= bit->second.charge;
  blobs_.erase(bit);
}

void MemoryVersionStore::drop_oldest(Lru::iterator it, bool for_budget) {
  const proto::VersionId id = it->ids.back();
  it->ids.pop_back();
  --versions_;
  ++evictions_;
  if (for_budget) {
    ++budget_evictions_;
  }
  release(id);
  if (it->ids.empty()) {
    bytes_ -= key_charge(it->key);
    keys_.erase(std::string_view(it->key));
    lru_.erase(it);
  }
}

void MemoryVersionStore::evict_to_budget() {
  while (bytes_ > options_.max_bytes && !lru_.empty()) {
    drop_oldest(std::prev(lru_.end()), /*for_budget=*/true);
  }
}

}  // namespace coilgun
