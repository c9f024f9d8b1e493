// The VersionStore contract: what every tier of the version store must do, whatever it keeps
// where (common/store/version_store.h). Each TEMPLATE_TEST_CASE below runs once per tier in
// COILGUN_STORE_TIERS; a new tier (memcached) adds one factory type to that list and must pass
// every test here unchanged.
//
// These tests use only the VersionStore interface and VersionStoreStats, with ample room (no
// budget eviction), and compare blobs by id and bytes, not by object. What belongs to one tier
// is tested in that tier's own file: the memory tier's byte charges, budget eviction order,
// index charging, its synchronous held()/find() and stored-copy identity are in
// memory_version_store_test.cc.
#include "common/store/version_store.h"

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <concepts>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/net/loop.h"
#include "proto/delta.h"
#include "tests/unit/common/store/memcached_server.h"
#include "tests/unit/common/store/store_test_helpers.h"
#include "tests/unit/test_pages.h"

using namespace coilgun;
using coilgun::proto::VersionId;
using coilgun::test::Answer;
using coilgun::test::blob_of;
using coilgun::test::Bytes;
using coilgun::test::concurrent_workload;
using coilgun::test::copy_of;
using coilgun::test::Ids;
using coilgun::test::lookup_of;
using coilgun::test::PageGen;
using coilgun::test::run_until;
using coilgun::test::to_bytes;
using coilgun::test::versions_of;
using coilgun::test::Workload;
using coilgun::test::workload_blobs;
using coilgun::test::workload_keys;

namespace {

// What every tier's factory takes.
struct TierOptions {
  // K: versions kept per key, at least 1. (What 0 means is up to each tier's own options.)
  size_t max_versions_per_key = 4;
};

// A tier under test is a default-constructible type with
//  * make(options): a new, empty store with room for everything these tests put in it (none of
//    them relies on budget eviction). The store is used only while the tier object lives.
//  * loop: the test thread's loop, which the calls below answer on.
template <class T>
concept StoreTier = std::default_initializable<T> && requires(T tier, const TierOptions& options) {
  { tier.make(options) } -> std::same_as<std::unique_ptr<VersionStore>>;
  { tier.loop } -> std::same_as<uv::Loop&>;
};

// The in-process tier, as make_version_store() builds it from [store] without servers.
struct MemoryTier {
  std::unique_ptr<VersionStore> make(const TierOptions& o) {
    return make_version_store({.max_versions_per_key = o.max_versions_per_key});
  }
  uv::Loop loop;
};

// The memory tier in front of memcached, as make_version_store() builds it from [store] with
// servers: one real memcached for the whole run, a scope of its own per store (so no test sees
// another's items).
struct SharedTier {
  std::unique_ptr<VersionStore> make(const TierOptions& o) {
    static coilgun::test::MemcachedServer server;
    static int stores = 0;
    VersionStoreOptions options;
    options.max_versions_per_key = o.max_versions_per_key;
    options.memcached = {server.address()};
    options.scope = coilgun::test::numbered(
        "contract-", static_cast<uint64_t>(getpid()) * 1000 + static_cast<uint64_t>(++stores));
    return make_version_store(options);
  }
  uv::Loop loop;
};

static_assert(StoreTier<MemoryTier>);
static_assert(StoreTier<SharedTier>);

// Every tier the contract runs against. Add a tier here (and a static_assert above).
#define COILGUN_STORE_TIERS MemoryTier, SharedTier

// Runs a lookup of |id| to completion on the tier's loop and returns what its callback got.
// Requires exactly one call, after lookup() returned.
template <StoreTier Tier>
BlobRef find(Tier& tier, VersionStore& store, std::string_view key, VersionId id,
             VersionStore::Want want = VersionStore::Want::kBytes) {
  const auto got = lookup_of(tier.loop, store, key, {&id, 1}, want);
  REQUIRE(got.calls == 1);
  REQUIRE_FALSE(got.during_call);
  return got.value;
}

// The same for versions().
template <StoreTier Tier>
Ids listed(Tier& tier, VersionStore& store, std::string_view key) {
  const auto got = versions_of(tier.loop, store, key);
  REQUIRE(got.calls == 1);
  REQUIRE_FALSE(got.during_call);
  return got.value;
}

// True if |got| is a blob with the id and bytes of |want|.
bool same_version(const BlobRef& got, const BlobRef& want) {
  return got != nullptr && got->id() == want->id() && got->size() == want->size() &&
         std::equal(got->bytes().begin(), got->bytes().end(), want->bytes().begin());
}

}  // namespace

TEMPLATE_TEST_CASE("A store keeps the newest K versions of a key, newest first",
                   "[version_store][contract]", COILGUN_STORE_TIERS) {
  TestType tier;
  const auto store = tier.make({.max_versions_per_key = 3});
  std::vector<BlobRef> b;
  for (uint32_t i = 0; i < 5; ++i) b.push_back(blob_of(100 + i, i));
  for (const auto& blob : b) store->put("k", blob);

  CHECK(listed(tier, *store, "k") == Ids{b[4]->id(), b[3]->id(), b[2]->id()});
  CHECK(find(tier, *store, "k", b[1]->id()) == nullptr);
  CHECK(find(tier, *store, "k", b[0]->id()) == nullptr);
  CHECK(same_version(find(tier, *store, "k", b[2]->id()), b[2]));
  const auto s = store->stats();
  CHECK(s.keys == 1);
  CHECK(s.versions == 3);
  CHECK(s.blobs == 3);
  CHECK(s.inserts == 5);
  CHECK(s.evictions == 2);
  CHECK(s.budget_evictions == 0);
  CHECK(s.hits == 1);
  CHECK(s.misses == 2);
}

TEMPLATE_TEST_CASE("A store moves a re-put version to the front without duplicating it",
                   "[version_store][contract]", COILGUN_STORE_TIERS) {
  TestType tier;
  const auto store = tier.make({.max_versions_per_key = 3});
  const auto a = blob_of(10, 1), b = blob_of(20, 2), c = blob_of(30, 3);
  store->put("k", a);
  store->put("k", b);
  store->put("k", c);
  store->put("k", a);
  CHECK(listed(tier, *store, "k") == Ids{a->id(), c->id(), b->id()});
  // A fresh Blob with the same bytes is the same version.
  store->put("k", copy_of(c));
  CHECK(listed(tier, *store, "k") == Ids{c->id(), a->id(), b->id()});
  const auto s = store->stats();
  CHECK(s.versions == 3);
  CHECK(s.blobs == 3);
  CHECK(s.inserts == 5);
  CHECK(s.evictions == 0);
}

TEMPLATE_TEST_CASE("A store finds a blob only under a key that holds it",
                   "[version_store][contract]", COILGUN_STORE_TIERS) {
  TestType tier;
  const auto store = tier.make({});
  const auto a = blob_of(500, 1), b = blob_of(500, 2);
  store->put("site-a/page", a);
  store->put("site-b/page", b);

  CHECK(same_version(find(tier, *store, "site-a/page", a->id()), a));
  CHECK(find(tier, *store, "site-b/page", a->id()) == nullptr);  // Right id, wrong key.
  CHECK(find(tier, *store, "site-c/page", a->id()) == nullptr);  // Unknown key.
  CHECK(find(tier, *store, "site-a/page", VersionId{1, 2}) == nullptr);
  CHECK(listed(tier, *store, "site-c/page").empty());
  const auto s = store->stats();
  CHECK(s.hits == 1);
  CHECK(s.misses == 3);
}

TEMPLATE_TEST_CASE("A store holds a body shared by two keys as one blob",
                   "[version_store][contract]", COILGUN_STORE_TIERS) {
  TestType tier;
  const auto store = tier.make({});
  const auto a = blob_of(1000, 7);
  store->put("k1", a);
  store->put("k2", copy_of(a));
  const auto s = store->stats();
  CHECK(s.keys == 2);
  CHECK(s.versions == 2);
  CHECK(s.blobs == 1);
  CHECK(same_version(find(tier, *store, "k1", a->id()), a));
  CHECK(same_version(find(tier, *store, "k2", a->id()), a));
}

TEMPLATE_TEST_CASE("A blob shared by two keys survives being dropped by one of them",
                   "[version_store][contract]", COILGUN_STORE_TIERS) {
  TestType tier;
  const auto store = tier.make({.max_versions_per_key = 1});
  const auto shared = blob_of(1000, 1), t = blob_of(300, 2), u = blob_of(400, 3);
  store->put("k1", shared);
  store->put("k2", shared);
  store->put("k1", t);  // K = 1: k1 drops |shared|, k2 still holds it.

  CHECK(listed(tier, *store, "k1") == Ids{t->id()});
  CHECK(find(tier, *store, "k1", shared->id()) == nullptr);
  const BlobRef held = find(tier, *store, "k2", shared->id());
  REQUIRE(same_version(held, shared));
  auto s = store->stats();
  CHECK(s.blobs == 2);
  CHECK(s.evictions == 1);

  store->put("k2", u);  // Now no key holds |shared|: it leaves the store.
  s = store->stats();
  CHECK(s.blobs == 2);
  CHECK(s.evictions == 2);
  CHECK(find(tier, *store, "k2", shared->id()) == nullptr);
  // A reference handed out earlier stays valid.
  CHECK(VersionId::of(held->bytes()) == shared->id());
}

TEMPLATE_TEST_CASE("A store refuses a null blob and changes nothing", "[version_store][contract]",
                   COILGUN_STORE_TIERS) {
  TestType tier;
  const auto store = tier.make({});
  const auto a = blob_of(100, 1);
  store->put("k", a);
  const auto before = store->stats();
  store->put("k", nullptr);
  store->put("other", nullptr);

  const auto s = store->stats();
  CHECK(s.rejects == before.rejects + 2);
  CHECK(s.inserts == before.inserts);
  CHECK(s.keys == 1);
  CHECK(s.versions == 1);
  CHECK(listed(tier, *store, "k") == Ids{a->id()});
  CHECK(listed(tier, *store, "other").empty());
}

TEMPLATE_TEST_CASE("A store takes an empty key and an empty body", "[version_store][contract]",
                   COILGUN_STORE_TIERS) {
  TestType tier;
  const auto store = tier.make({});
  const auto empty = Blob::make({});
  CHECK(empty->size() == 0);
  CHECK(empty->id() == VersionId::of({}));
  store->put("", empty);
  CHECK(listed(tier, *store, "") == Ids{empty->id()});
  const BlobRef got = find(tier, *store, "", empty->id());
  REQUIRE(got != nullptr);
  CHECK(got->id() == empty->id());
  CHECK(got->bytes().empty());
  CHECK(store->stats().keys == 1);
}

TEMPLATE_TEST_CASE("A callback may call back into the store", "[version_store][contract]",
                   COILGUN_STORE_TIERS) {
  TestType tier;
  const auto store = tier.make({});
  const auto a = blob_of(100, 1), b = blob_of(100, 2);
  store->put("k", a);
  Answer<Ids> inner;
  Pending outer = store->lookup(tier.loop, "k", std::vector<VersionId>{a->id()},
                                VersionStore::Want::kBytes, [&](BlobRef got) {
                                  CHECK(same_version(got, a));
                                  // Would deadlock if the store held its lock while calling back.
                                  store->put("k", b);
                                  inner = versions_of(tier.loop, *store, "k");
                                  tier.loop.stop();
                                });
  run_until(tier.loop, [&] { return !outer.active(); });
  CHECK_FALSE(outer.active());
  CHECK(inner.calls == 1);
  CHECK(inner.value == Ids{b->id(), a->id()});
}

TEMPLATE_TEST_CASE("A lookup answers with the first of its ids that the key holds",
                   "[version_store][contract]", COILGUN_STORE_TIERS) {
  TestType tier;
  const auto store = tier.make({});
  const auto a = blob_of(300, 1), b = blob_of(300, 2), other = blob_of(300, 3);
  store->put("k", a);
  store->put("k", b);
  store->put("elsewhere", other);
  const auto first = [&](std::vector<VersionId> ids) {
    const auto got = lookup_of(tier.loop, *store, "k", ids);
    REQUIRE(got.calls == 1);
    REQUIRE_FALSE(got.during_call);
    return got.value;
  };
  CHECK(same_version(first({a->id(), b->id()}), a));  // The order given, not the store's.
  CHECK(same_version(first({other->id(), VersionId{1, 2}, b->id(), a->id()}), b));
  CHECK(first({other->id(), VersionId{1, 2}}) == nullptr);
  CHECK(first({}) == nullptr);
  const auto s = store->stats();
  CHECK(s.hits == 2);  // One per call, however many ids it named.
  CHECK(s.misses == 2);
}

TEMPLATE_TEST_CASE("A lookup for a base hands out the blob with its index built",
                   "[version_store][contract]", COILGUN_STORE_TIERS) {
  TestType tier;
  const auto store = tier.make({});
  const auto a = blob_of(5000, 1);
  store->put("k", copy_of(a));
  const BlobRef got = find(tier, *store, "k", a->id(), VersionStore::Want::kPrepared);
  REQUIRE(same_version(got, a));
  CHECK(got->is_prepared());
  CHECK(got->prepared().id() == a->id());
}

TEMPLATE_TEST_CASE("A cancelled call never calls back", "[version_store][contract]",
                   COILGUN_STORE_TIERS) {
  TestType tier;
  const auto store = tier.make({});
  const auto a = blob_of(100, 1);
  store->put("k", a);
  int calls = 0;
  {
    Pending dropped = store->versions(tier.loop, "k", [&](Ids) { ++calls; });
    CHECK(dropped.active());
  }  // Destroyed: cancelled.
  Pending cancelled = store->lookup(tier.loop, "k", std::vector<VersionId>{a->id()},
                                    VersionStore::Want::kBytes, [&](BlobRef) { ++calls; });
  cancelled.cancel();
  CHECK_FALSE(cancelled.active());
  Pending replaced = store->versions(tier.loop, "k", [&](Ids) { ++calls; });
  replaced = Pending();  // Assigned over: cancelled too.
  // A call made after them is answered, so theirs had their chance to run.
  CHECK(listed(tier, *store, "k") == Ids{a->id()});
  CHECK(calls == 0);
}

TEMPLATE_TEST_CASE("A store stays consistent under concurrent callers", "[version_store][contract]",
                   COILGUN_STORE_TIERS) {
  // The thread contract: every method may be called from any thread at once.
  const VersionStore::Want want =
      GENERATE(VersionStore::Want::kBytes, VersionStore::Want::kPrepared);
  constexpr size_t kK = 3;
  constexpr int kThreads = 4;
  constexpr int kIterations = 10000;

  const std::vector<std::string> keys = workload_keys();
  const std::vector<BlobRef> blobs = workload_blobs();

  TestType tier;
  const auto store = tier.make({.max_versions_per_key = kK});
  const Workload w =
      concurrent_workload(*store, keys, blobs, kThreads, kIterations,
                          {.max_versions_per_key = kK, .want = want, .hit_ok = same_version});

  CHECK(w.bad == 0);
  CHECK(w.callbacks == w.lookups);
  const auto s = store->stats();
  CHECK(s.inserts + s.rejects == w.puts);
  CHECK(s.rejects == 0);
  CHECK(s.hits + s.misses == w.lookups);
  CHECK(s.hits == w.hits);
  CHECK(s.hits > 0);
  CHECK(s.evictions > 0);
  CHECK(s.budget_evictions == 0);
  CHECK(s.keys <= keys.size());

  // The structure is intact: each list within K, and every listed version is found under its
  // key with its own bytes. (That the lists add up to the counters is the memory tier's own
  // test: a shared tier's lists also name what other daemons stored.)
  store->flush();  // A shared tier's writes still queued would move the lists on meanwhile.
  std::vector<std::pair<std::string, Ids>> lists;
  for (const auto& key : keys) {
    Ids ids = listed(tier, *store, key);
    CHECK(ids.size() <= kK);
    lists.emplace_back(key, std::move(ids));
  }
  for (const auto& [key, ids] : lists) {
    for (const auto& id : ids) {
      const auto put =
          std::find_if(blobs.begin(), blobs.end(), [&](const BlobRef& b) { return b->id() == id; });
      REQUIRE(put != blobs.end());
      CHECK(same_version(find(tier, *store, key, id), *put));
    }
  }
}

// ---- Blob: one type for every tier (not a tier test) ----------------------------------------

TEST_CASE("Blob::prepared is built once across threads and indexes the blob's own bytes",
          "[version_store]") {
  PageGen gen(42);
  auto blocks = gen.blocks(40);
  const auto base = Blob::make(to_bytes(PageGen::render(blocks, "2026-11-22 09:00")));
  gen.edit(blocks);
  const Bytes body = to_bytes(PageGen::render(blocks, "2026-11-22 09:01"));

  CHECK_FALSE(base->is_prepared());
  CHECK(base->memory_bytes() == base->size());

  constexpr int kThreads = 8;
  std::vector<const proto::PreparedBase*> seen(kThreads, nullptr);
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      ready.fetch_add(1);
      while (ready.load() < kThreads) {
      }
      seen[static_cast<size_t>(t)] = &base->prepared();
    });
  }
  for (auto& th : threads) th.join();
  for (const auto* p : seen) CHECK(p == seen[0]);

  const proto::PreparedBase& prepared = base->prepared();
  CHECK(&prepared == seen[0]);
  CHECK(base->is_prepared());
  CHECK(prepared.id() == base->id());
  CHECK(prepared.bytes().data() == base->bytes().data());
  CHECK(prepared.bytes().size() == base->size());
  CHECK(prepared.index_bytes() > 0);
  CHECK(base->memory_bytes() == base->size() + prepared.index_bytes());

  // The index works: the next version codes as a small delta that rebuilds exactly.
  proto::DeltaEncoder enc;
  Bytes payload;
  REQUIRE(enc.encode(&prepared, body, VersionId::of(body), payload).ok());
  CHECK(enc.last_stats().kind == proto::DeltaKind::kDelta);
  CHECK(enc.last_stats().matcher_used);
  CHECK(payload.size() * 20 < body.size());
  auto header = proto::parse_delta(payload);
  REQUIRE(header.ok());
  CHECK(header->base == base->id());
  proto::DeltaDecoder dec;
  Bytes out;
  REQUIRE(dec.decode(*header, base->bytes(), body.size(), out).ok());
  CHECK(out == body);
}
