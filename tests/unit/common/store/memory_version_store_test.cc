// The memory tier's own tests: what MemoryVersionStore does beyond the VersionStore contract
// (which every tier runs, in version_store_test.cc). Its byte charges (kKeyOverheadBytes,
// kBlobOverheadBytes, the blobs' indexes), eviction to the byte budget (least recently used key,
// its oldest version first), lookups for a base (Want::kPrepared), K = 0, the synchronous held()
// and find() the interface answers with, and handing out the first stored copy of a blob itself.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <random>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/net/loop.h"
#include "common/store/memory_store.h"
#include "tests/unit/common/store/store_test_helpers.h"
#include "tests/unit/test_pages.h"

using namespace coilgun;
using coilgun::proto::VersionId;
using coilgun::test::blob_of;
using coilgun::test::concurrent_workload;
using coilgun::test::copy_of;
using coilgun::test::Ids;
using coilgun::test::lookup_of;
using coilgun::test::numbered;
using coilgun::test::PageGen;
using coilgun::test::versions_of;
using coilgun::test::Workload;
using coilgun::test::workload_blobs;
using coilgun::test::workload_keys;

namespace {

size_t blob_charge(const BlobRef& b) {
  return b->memory_bytes() + MemoryVersionStore::kBlobOverheadBytes;
}
size_t key_charge(const std::string& key) {
  return key.size() + MemoryVersionStore::kKeyOverheadBytes;
}

// What the store finds for |id| under |key|, now.
BlobRef find(MemoryVersionStore& store, std::string_view key, VersionId id,
             VersionStore::Want want = VersionStore::Want::kBytes) {
  return store.find(key, {&id, 1}, want);
}

}  // namespace

TEST_CASE("MemoryVersionStore charges each key and each distinct blob it holds",
          "[version_store][memory]") {
  SECTION("the newest K versions, after older ones were dropped") {
    MemoryVersionStore store({.max_versions_per_key = 3});
    std::vector<BlobRef> b;
    for (uint32_t i = 0; i < 5; ++i) b.push_back(blob_of(100 + i, i));
    for (const auto& blob : b) store.put("k", blob);
    CHECK(store.stats().bytes ==
          key_charge("k") + blob_charge(b[2]) + blob_charge(b[3]) + blob_charge(b[4]));
  }
  SECTION("a re-put version, once") {
    MemoryVersionStore store({.max_versions_per_key = 3});
    const auto a = blob_of(10, 1), b = blob_of(20, 2), c = blob_of(30, 3);
    store.put("k", a);
    store.put("k", b);
    store.put("k", c);
    store.put("k", a);
    store.put("k", copy_of(c));
    CHECK(store.stats().bytes ==
          key_charge("k") + blob_charge(a) + blob_charge(b) + blob_charge(c));
  }
  SECTION("a body two keys hold, once") {
    MemoryVersionStore store;
    const auto a = blob_of(1000, 7);
    store.put("k1", a);
    store.put("k2", copy_of(a));
    CHECK(store.stats().bytes == key_charge("k1") + key_charge("k2") + blob_charge(a));
  }
  SECTION("a shared blob until the last key drops it") {
    MemoryVersionStore store({.max_versions_per_key = 1});
    const auto shared = blob_of(1000, 1), t = blob_of(300, 2), u = blob_of(400, 3);
    store.put("k1", shared);
    store.put("k2", shared);
    store.put("k1", t);
    CHECK(store.stats().bytes ==
          key_charge("k1") + key_charge("k2") + blob_charge(shared) + blob_charge(t));
    store.put("k2", u);
    CHECK(store.stats().bytes ==
          key_charge("k1") + key_charge("k2") + blob_charge(t) + blob_charge(u));
  }
  SECTION("an empty key and an empty body: the overheads alone") {
    MemoryVersionStore store;
    store.put("", Blob::make({}));
    CHECK(store.stats().bytes == key_charge("") + MemoryVersionStore::kBlobOverheadBytes);
  }
}

TEST_CASE("MemoryVersionStore hands out the first stored copy of a blob itself",
          "[version_store][memory]") {
  MemoryVersionStore store({.max_versions_per_key = 1});
  const auto a = blob_of(1000, 7), t = blob_of(300, 2);
  store.put("k1", a);
  store.put("k2", copy_of(a));  // Same id: the stored copy is kept, this one is not retained.
  CHECK(find(store, "k2", a->id()) == a);
  store.put("k1", t);  // k1 drops |a|; k2 still holds the same object.
  CHECK(find(store, "k2", a->id()) == a);
  CHECK(find(store, "k1", t->id()) == t);
}

TEST_CASE("MemoryVersionStore answers through the interface with what find() and held() say",
          "[version_store][memory]") {
  MemoryVersionStore store;
  uv::Loop loop;
  const auto a = blob_of(100, 1), b = blob_of(100, 2);
  store.put("k", a);
  store.put("k", b);
  const auto listed = versions_of(loop, store, "k");
  CHECK(listed.calls == 1);
  CHECK_FALSE(listed.during_call);
  CHECK(listed.value == store.held("k"));
  const VersionId ids[] = {VersionId{1, 2}, a->id()};
  const auto found = lookup_of(loop, store, "k", ids);
  CHECK(found.calls == 1);
  CHECK_FALSE(found.during_call);
  CHECK(found.value == a);  // The stored object itself.
  CHECK(store.find("k", ids, VersionStore::Want::kBytes) == a);
  CHECK(loop.close() == 0);
}

TEST_CASE("MemoryVersionStore evicts the oldest version of the least recently used key",
          "[version_store][memory]") {
  const auto v1 = blob_of(1000, 1), v2 = blob_of(1000, 2), v3 = blob_of(1000, 3),
             v4 = blob_of(1000, 4);
  // Room for both keys and three blobs, not four.
  const size_t budget = key_charge("k1") + key_charge("k2") + 3 * blob_charge(v1) + 10;
  MemoryVersionStore store({.max_bytes = budget});
  store.put("k1", v1);
  store.put("k1", v2);
  store.put("k2", v3);
  CHECK(store.stats().budget_evictions == 0);
  store.put("k2", v4);

  const auto s = store.stats();
  CHECK(s.budget_evictions == 1);
  CHECK(s.evictions == 1);
  CHECK(s.bytes <= budget);
  CHECK(store.held("k1") == Ids{v2->id()});  // k1 was least recent: lost its oldest.
  CHECK(store.held("k2") == Ids{v4->id(), v3->id()});
}

TEST_CASE("MemoryVersionStore: lookups and versions() keep a key from budget eviction",
          "[version_store][memory]") {
  const size_t n = 1000;
  const auto a = blob_of(n, 1), b = blob_of(n, 2), c = blob_of(n, 3), d = blob_of(n, 4);
  const size_t per_key = key_charge("ka") + blob_charge(a);
  MemoryVersionStore store({.max_bytes = 3 * per_key});
  store.put("ka", a);
  store.put("kb", b);
  store.put("kc", c);
  CHECK(store.stats().bytes == 3 * per_key);

  SECTION("a lookup hit") { REQUIRE(find(store, "ka", a->id()) == a); }
  SECTION("a versions() call") { REQUIRE(store.held("ka") == Ids{a->id()}); }

  store.put("kd", d);  // Over budget: the least recent key is now kb, not ka.
  const auto s = store.stats();
  CHECK(s.bytes == 3 * per_key);
  CHECK(s.keys == 3);
  CHECK(s.budget_evictions == 1);
  CHECK(store.held("kb").empty());
  CHECK(store.held("ka") == Ids{a->id()});
  CHECK(store.held("kc") == Ids{c->id()});
  CHECK(store.held("kd") == Ids{d->id()});
}

TEST_CASE("MemoryVersionStore: a lookup miss does not refresh a key", "[version_store][memory]") {
  const auto a = blob_of(1000, 1), b = blob_of(1000, 2), c = blob_of(1000, 3);
  const size_t per_key = key_charge("ka") + blob_charge(a);
  MemoryVersionStore store({.max_bytes = 2 * per_key});
  store.put("ka", a);
  store.put("kb", b);
  CHECK(find(store, "ka", b->id()) == nullptr);  // ka exists but does not hold b.
  store.put("kc", c);
  CHECK(store.held("ka").empty());
  CHECK(store.held("kb") == Ids{b->id()});
}

TEST_CASE("MemoryVersionStore refuses a blob larger than its whole budget",
          "[version_store][memory]") {
  const auto small = blob_of(100, 1), big = blob_of(5000, 2);
  MemoryVersionStore store({.max_bytes = 4000});
  store.put("k", small);
  const auto before = store.stats();
  store.put("k", big);
  store.put("other", big);
  store.put("k", nullptr);

  const auto s = store.stats();
  CHECK(s.rejects == 3);
  CHECK(s.inserts == before.inserts);
  CHECK(s.bytes == before.bytes);
  CHECK(s.keys == 1);
  CHECK(store.held("k") == Ids{small->id()});
  CHECK(store.held("other").empty());
}

TEST_CASE("MemoryVersionStore: a blob that fits only alone evicts everything else",
          "[version_store][memory]") {
  const auto big = blob_of(3000, 1);
  const size_t budget = key_charge("big") + blob_charge(big);
  MemoryVersionStore store({.max_bytes = budget});
  for (uint32_t i = 0; i < 5; ++i) store.put(numbered("k", i), blob_of(100, 10 + i));
  store.put("big", big);
  const auto s = store.stats();
  CHECK(s.keys == 1);
  CHECK(s.bytes == budget);
  CHECK(s.budget_evictions == 5);
  CHECK(store.held("big") == Ids{big->id()});
}

TEST_CASE("MemoryVersionStore treats K = 0 as K = 1", "[version_store][memory]") {
  MemoryVersionStore store({.max_versions_per_key = 0});
  const auto a = blob_of(10, 1), b = blob_of(10, 2);
  store.put("k", a);
  store.put("k", b);
  CHECK(store.held("k") == Ids{b->id()});
}

TEST_CASE("MemoryVersionStore charges an index built after the blob was stored",
          "[version_store][memory]") {
  PageGen gen(5);
  const auto a = Blob::make(gen.random_bytes(20000));

  SECTION("a lookup for a base builds and charges it before handing the blob out") {
    MemoryVersionStore store;
    store.put("k", a);
    CHECK(store.stats().bytes ==
          key_charge("k") + a->size() + MemoryVersionStore::kBlobOverheadBytes);
    const BlobRef got = find(store, "k", a->id(), VersionStore::Want::kPrepared);
    REQUIRE(got == a);
    CHECK(a->is_prepared());
    CHECK(store.stats().bytes == key_charge("k") + blob_charge(a));
    CHECK(blob_charge(a) > a->size() + MemoryVersionStore::kBlobOverheadBytes);
  }
  SECTION("without it, the next touch charges an index the caller built") {
    MemoryVersionStore store;
    store.put("k", a);
    const size_t before = store.stats().bytes;
    (void)a->prepared();
    CHECK(store.stats().bytes == before);
    REQUIRE(find(store, "k", a->id()) == a);
    CHECK(store.stats().bytes == before + a->prepared().index_bytes());
  }
  SECTION("growth past the budget evicts the least recently used key") {
    // The index of |a| (larger than |a| itself) fits once |other| is gone.
    const auto other = blob_of(100000, 6);
    const size_t budget = key_charge("k") + key_charge("o") + blob_charge(a) + blob_charge(other);
    MemoryVersionStore store({.max_bytes = budget});
    store.put("o", other);
    store.put("k", a);
    REQUIRE(find(store, "k", a->id(), VersionStore::Want::kPrepared) == a);
    const auto s = store.stats();
    CHECK(s.bytes <= budget);
    CHECK(s.budget_evictions == 1);
    CHECK(store.held("o").empty());
    CHECK(store.held("k") == Ids{a->id()});
  }
}

namespace {

// The store as a few vectors and linear scans, to check the real one against.
class NaiveStore {
 public:
  NaiveStore(size_t k, size_t max_bytes) : k_(k), max_(max_bytes) {}

  void put(const std::string& key, const BlobRef& blob) {
    if (blob_charge(blob) + key_charge(key) > max_) {
      ++s_.rejects;
      return;
    }
    ++s_.inserts;
    sizes_[blob->id()] = blob->size();
    auto& ids = front(key, /*create=*/true)->second;
    const auto pos = std::find(ids.begin(), ids.end(), blob->id());
    if (pos != ids.end()) ids.erase(pos);
    ids.insert(ids.begin(), blob->id());
    if (ids.size() > k_) {
      ids.pop_back();
      ++s_.evictions;
    }
    while (bytes() > max_ && !keys_.empty()) {
      keys_.back().second.pop_back();
      ++s_.evictions;
      ++s_.budget_evictions;
      if (keys_.back().second.empty()) keys_.pop_back();
    }
  }

  bool lookup(const std::string& key, VersionId id) {
    auto it = find_key(key);
    const bool hit = it != keys_.end() &&
                     std::find(it->second.begin(), it->second.end(), id) != it->second.end();
    if (hit) {
      front(key, false);
      ++s_.hits;
    } else {
      ++s_.misses;
    }
    return hit;
  }

  Ids versions(const std::string& key) {
    auto it = front(key, false);
    return it == keys_.end() ? Ids{} : it->second;
  }

  VersionStoreStats stats() const {
    VersionStoreStats s = s_;
    s.keys = keys_.size();
    s.versions = 0;
    for (const auto& [k, ids] : keys_) s.versions += ids.size();
    s.blobs = held().size();
    s.bytes = bytes();
    return s;
  }

 private:
  using Keys = std::vector<std::pair<std::string, Ids>>;  // Most recently used first.

  Keys::iterator find_key(const std::string& key) {
    return std::find_if(keys_.begin(), keys_.end(), [&](const auto& e) { return e.first == key; });
  }

  // Moves |key| to the front (creating it if asked) and returns it, or end() if absent.
  Keys::iterator front(const std::string& key, bool create) {
    auto it = find_key(key);
    if (it == keys_.end()) {
      if (!create) return it;
      keys_.insert(keys_.begin(), {key, {}});
    } else {
      std::rotate(keys_.begin(), it, it + 1);
    }
    return keys_.begin();
  }

  std::vector<VersionId> held() const {
    std::vector<VersionId> out;
    for (const auto& [k, ids] : keys_) {
      for (const auto& id : ids) {
        if (std::find(out.begin(), out.end(), id) == out.end()) out.push_back(id);
      }
    }
    return out;
  }

  uint64_t bytes() const {
    uint64_t total = 0;
    for (const auto& [k, ids] : keys_) total += key_charge(k);
    for (const auto& id : held()) total += sizes_.at(id) + MemoryVersionStore::kBlobOverheadBytes;
    return total;
  }

  size_t k_, max_;
  Keys keys_;
  std::unordered_map<VersionId, size_t, proto::VersionIdHash> sizes_;
  VersionStoreStats s_;
};

void check_same(const VersionStoreStats& a, const VersionStoreStats& b) {
  CHECK(a.keys == b.keys);
  CHECK(a.versions == b.versions);
  CHECK(a.blobs == b.blobs);
  CHECK(a.bytes == b.bytes);
  CHECK(a.hits == b.hits);
  CHECK(a.misses == b.misses);
  CHECK(a.inserts == b.inserts);
  CHECK(a.rejects == b.rejects);
  CHECK(a.evictions == b.evictions);
  CHECK(a.budget_evictions == b.budget_evictions);
}

}  // namespace

TEST_CASE("MemoryVersionStore matches a naive model over random operations",
          "[version_store][memory]") {
  const uint32_t seed = GENERATE(1u, 2u, 3u);
  std::mt19937 rng(seed);
  constexpr size_t kK = 3;
  constexpr size_t kBudget = 24000;

  std::vector<std::string> keys{""};
  for (int i = 0; i < 30; ++i) keys.push_back(numbered("/page/" + std::string(rng() % 40, 'x'), i));
  std::vector<BlobRef> blobs{Blob::make({})};
  for (uint32_t i = 0; i < 50; ++i) blobs.push_back(blob_of(rng() % 2500, seed * 1000 + i));
  blobs.push_back(blob_of(kBudget, seed * 1000 + 99));  // Never fits.

  MemoryVersionStore store({.max_versions_per_key = kK, .max_bytes = kBudget});
  NaiveStore model(kK, kBudget);
  VersionStoreStats max_seen;
  for (int op = 0; op < 4000; ++op) {
    const std::string& key = keys[rng() % keys.size()];
    const BlobRef& blob = blobs[rng() % blobs.size()];
    switch (rng() % 3) {
      case 0:
        store.put(key, blob);
        model.put(key, blob);
        break;
      case 1: {
        const BlobRef got = find(store, key, blob->id());
        REQUIRE((got != nullptr) == model.lookup(key, blob->id()));
        if (got != nullptr) REQUIRE(got->id() == blob->id());
        break;
      }
      default:
        REQUIRE(store.held(key) == model.versions(key));
        break;
    }
    const auto s = store.stats();
    REQUIRE(s.bytes <= kBudget);
    check_same(s, model.stats());
    max_seen.budget_evictions = s.budget_evictions;
    max_seen.rejects = s.rejects;
    max_seen.keys = std::max(max_seen.keys, s.keys);
  }
  // The sequence reached the interesting cases.
  CHECK(max_seen.budget_evictions > 100);
  CHECK(max_seen.rejects > 10);
  CHECK(max_seen.keys > 5);
  for (const auto& key : keys) CHECK(store.held(key) == model.versions(key));
}

TEST_CASE("MemoryVersionStore stays consistent under concurrent workers",
          "[version_store][memory]") {
  constexpr size_t kK = 3;
  constexpr size_t kBudget = size_t{64} * 1024;
  constexpr int kThreads = 4;
  constexpr int kIterations = 20000;
  const bool prepare = GENERATE(false, true);

  const std::vector<std::string> keys = workload_keys();
  const std::vector<BlobRef> blobs = workload_blobs();

  MemoryVersionStore store({.max_versions_per_key = kK, .max_bytes = kBudget});
  const Workload w = concurrent_workload(
      store, keys, blobs, kThreads, kIterations,
      {.max_versions_per_key = kK,
       .want = prepare ? VersionStore::Want::kPrepared : VersionStore::Want::kBytes,
       .hit_ok =
           [](const BlobRef& got, const BlobRef& want) {
             // One stored copy per id: the same object.
             return got == want && got->bytes().size() == want->size();
           },
       .state_ok = [&] { return store.stats().bytes <= kBudget; }});

  CHECK(w.bad == 0);
  CHECK(w.callbacks == w.lookups);
  const auto s = store.stats();
  CHECK(s.bytes <= kBudget);
  CHECK(s.inserts + s.rejects == w.puts);
  CHECK(s.hits + s.misses == w.lookups);
  CHECK(s.hits == w.hits);
  CHECK(s.hits > 0);
  CHECK(s.budget_evictions > 0);
  CHECK(s.keys <= keys.size());

  // The structure is intact: the listed versions add up, each within K, and the charge is
  // what the blobs and keys say (every index built was charged, by the lookup that built it).
  std::unordered_map<VersionId, BlobRef, proto::VersionIdHash> by_id;
  for (const auto& b : blobs) by_id[b->id()] = b;
  std::vector<std::pair<std::string, Ids>> listed;
  uint64_t versions = 0;
  uint64_t bytes = 0;
  std::vector<VersionId> distinct;
  for (const auto& key : keys) {
    Ids ids = store.held(key);
    CHECK(ids.size() <= kK);
    versions += ids.size();
    if (!ids.empty()) bytes += key_charge(key);
    for (const auto& id : ids) {
      if (std::find(distinct.begin(), distinct.end(), id) != distinct.end()) continue;
      distinct.push_back(id);
      bytes += blob_charge(by_id.at(id));
    }
    listed.emplace_back(key, std::move(ids));
  }
  const auto end = store.stats();
  CHECK(end.versions == versions);
  CHECK(end.blobs == distinct.size());
  CHECK(end.bytes == bytes);
  // Every listed version is found (a lookup for bytes changes no charge).
  if (!prepare) {
    for (const auto& [key, ids] : listed) {
      for (const auto& id : ids) CHECK(find(store, key, id) == by_id.at(id));
    }
  }
}
