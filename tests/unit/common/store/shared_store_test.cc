// The shared tier's own tests: what SharedStore does beyond the VersionStore contract (which it
// runs in version_store_test.cc). Daemons sharing versions through a real memcached, scopes that
// keep them apart, a restart that keeps what was stored, a poisoned cache that never gives a
// wrong byte, memcached going away, bodies too large for an item, and concurrent index writers.
#include "common/store/shared_store.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "common/net/loop.h"
#include "tests/unit/common/store/memcached_server.h"
#include "tests/unit/common/store/store_test_helpers.h"

using namespace coilgun;
using coilgun::proto::VersionId;
using coilgun::test::blob_of;
using coilgun::test::Ids;
using coilgun::test::lookup_of;
using coilgun::test::versions_of;

namespace {

VersionStoreOptions shared_options(const test::MemcachedServer& server, std::string scope) {
  VersionStoreOptions o;
  o.memcached = {server.address()};
  o.scope = std::move(scope);
  return o;
}

Ids listed(uv::Loop& loop, VersionStore& store, std::string_view key) {
  const auto got = versions_of(loop, store, key);
  REQUIRE(got.calls == 1);
  return got.value;
}

BlobRef find(uv::Loop& loop, VersionStore& store, std::string_view key, VersionId id) {
  const auto got = lookup_of(loop, store, key, {&id, 1});
  REQUIRE(got.calls == 1);
  return got.value;
}

// A Cyrus SASL set-up for memcached -S in a fresh directory: one user in a password database
// (made by saslpasswd2, Debian's sasl2-bin) and the memcached.conf naming it.
struct SaslUser {
  std::string dir;
  SaslUser(const std::string& user, const std::string& password) {
    char tmpl[] = "/tmp/coilgun-sasl-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    const std::string db = dir + "/sasldb2";
    const std::string make = "echo '" + password +
                             "' | /usr/sbin/saslpasswd2 -p -a memcached -c -f " + db + " " + user +
                             " && chmod 755 " + dir + " && chmod 644 " + db;
    REQUIRE(std::system(make.c_str()) == 0);
    std::FILE* conf = std::fopen((dir + "/memcached.conf").c_str(), "w");
    REQUIRE(conf != nullptr);
    std::fprintf(conf, "mech_list: plain\nsasldb_path: %s\n", db.c_str());
    std::fclose(conf);
  }
  ~SaslUser() { std::filesystem::remove_all(dir); }
};

bool same_bytes(const BlobRef& got, const BlobRef& want) {
  return got != nullptr && got->id() == want->id() &&
         std::equal(got->bytes().begin(), got->bytes().end(), want->bytes().begin(),
                    want->bytes().end());
}

}  // namespace

TEST_CASE("A store names and finds the versions another store with its scope wrote",
          "[version_store][shared]") {
  test::MemcachedServer server;
  uv::Loop loop;
  SharedStore a(shared_options(server, "site"));
  SharedStore b(shared_options(server, "site"));
  SharedStore other(shared_options(server, "another-site"));
  const auto v1 = blob_of(3000, 1), v2 = blob_of(3000, 2);
  a.put("/page", v1);
  a.put("/page", v2);
  a.flush();
  CHECK(a.stats().shared_writes == 2);

  CHECK(listed(loop, b, "/page") == Ids{v2->id(), v1->id()});  // b never saw the page.
  // Listing brought in the newest version, the base an answer will most likely name: the
  // lookup that follows is answered from memory.
  b.flush();
  CHECK(b.stats().shared_hits == 1);
  CHECK(same_bytes(find(loop, b, "/page", v2->id()), v2));
  CHECK(b.stats().shared_hits == 1);
  // An older one is fetched when asked for, once.
  CHECK(same_bytes(find(loop, b, "/page", v1->id()), v1));
  CHECK(b.stats().shared_hits == 2);
  CHECK(same_bytes(find(loop, b, "/page", v1->id()), v1));
  CHECK(b.stats().shared_hits == 2);
  CHECK(b.stats().hits == 3);

  // Another scope shares nothing, even the same key and ids.
  CHECK(listed(loop, other, "/page").empty());
  CHECK(find(loop, other, "/page", v1->id()) == nullptr);
  // Nor does another key of the same scope: a blob counts only under a key that holds it.
  CHECK(find(loop, b, "/elsewhere", v2->id()) == nullptr);
  CHECK(loop.close() == 0);
}

TEST_CASE("With SASL credentials stores share versions through a memcached that requires them",
          "[version_store][shared]") {
  SaslUser sasl("coilgun", "s3cret pass");
  test::MemcachedServer server({"-S"}, sasl.dir);
  uv::Loop loop;
  auto options = shared_options(server, "sasl");
  options.memcached_username = "coilgun";
  options.memcached_password = "s3cret pass";
  SharedStore a(options);
  SharedStore b(options);
  const auto v = blob_of(3000, 11);
  a.put("/page", v);
  a.flush();
  CHECK(a.stats().shared_writes == 1);
  CHECK(a.stats().shared_errors == 0);
  CHECK(listed(loop, b, "/page") == Ids{v->id()});  // b never saw the page.
  CHECK(same_bytes(find(loop, b, "/page", v->id()), v));
  CHECK(b.stats().shared_hits == 1);

  // A wrong password, or none, is refused: memory only, and counted.
  auto wrong = options;
  wrong.memcached_password = "guess";
  auto none = options;
  none.memcached_username.clear();
  none.memcached_password.clear();
  for (const auto& o : {wrong, none}) {
    SharedStore c(o);
    CHECK(listed(loop, c, "/page").empty());
    const auto w = blob_of(3000, 12);
    c.put("/page", w);
    c.flush();
    CHECK(c.stats().shared_writes == 0);
    CHECK(c.stats().shared_errors >= 1);
    CHECK(listed(loop, c, "/page") == Ids{w->id()});
  }
  CHECK(loop.close() == 0);
}

TEST_CASE("A lookup right after a listing waits for its prefetch instead of fetching again",
          "[version_store][shared]") {
  test::MemcachedServer server;
  uv::Loop loop;
  SharedStore writer(shared_options(server, "prefetch"));
  SharedStore reader(shared_options(server, "prefetch"));
  const auto v = blob_of(900 * 1000, 31);  // Large: its prefetch is still running below.
  writer.put("/page", v);
  writer.flush();
  CHECK(listed(loop, reader, "/page") == Ids{v->id()});
  // No flush: the lookup queues behind the prefetch on the store thread and finds the blob in
  // memory there, so memcached gave it once.
  CHECK(same_bytes(find(loop, reader, "/page", v->id()), v));
  CHECK(reader.stats().shared_hits == 1);
  CHECK(loop.close() == 0);
}

TEST_CASE("A store started again finds what the one before it stored", "[version_store][shared]") {
  test::MemcachedServer server;
  uv::Loop loop;
  const auto v = blob_of(5000, 3);
  {
    SharedStore before(shared_options(server, "restart"));
    before.put("/news", v);
  }  // Stopping writes what is queued.
  SharedStore after(shared_options(server, "restart"));
  CHECK(listed(loop, after, "/news") == Ids{v->id()});
  CHECK(same_bytes(find(loop, after, "/news", v->id()), v));
  CHECK(loop.close() == 0);
}

TEST_CASE("A poisoned cache costs a miss, never a wrong byte", "[version_store][shared]") {
  test::MemcachedServer server;
  uv::Loop loop;
  SharedStore writer(shared_options(server, "poison"));
  const auto v = blob_of(2000, 4);
  writer.put("/k", v);
  writer.flush();
  MemcachedClient raw(shared_options(server, "poison"));

  SECTION("a blob item whose bytes are not its id's") {
    auto bad = std::string(reinterpret_cast<const char*>(v->bytes().data()), v->size());
    bad[100] ^= 1;
    REQUIRE(raw.set(writer.blob_item(v->id()), bad).ok());
    SharedStore reader(shared_options(server, "poison"));
    CHECK(listed(loop, reader, "/k") == Ids{v->id()});
    reader.flush();  // Listing fetched the newest version too, and refused it.
    CHECK(reader.stats().shared_corrupt == 1);
    CHECK(find(loop, reader, "/k", v->id()) == nullptr);
    CHECK(reader.stats().shared_corrupt == 2);
    CHECK(reader.stats().misses == 1);
  }
  SECTION("an index item that does not parse") {
    REQUIRE(raw.set(writer.index_item("/k"), "garbage").ok());
    SharedStore reader(shared_options(server, "poison"));
    CHECK(listed(loop, reader, "/k").empty());
    CHECK(find(loop, reader, "/k", v->id()) == nullptr);
    CHECK(reader.stats().shared_corrupt == 2);
    // The next write replaces it with a good one.
    const auto w = blob_of(2000, 5);
    reader.put("/k", w);
    reader.flush();
    CHECK(listed(loop, reader, "/k") == Ids{w->id()});
  }
  SECTION("an index naming a blob for another key's content") {
    // The index of /k names an id whose item holds other bytes: still checked against the id.
    const auto x = blob_of(2000, 6);
    REQUIRE(raw.set(writer.blob_item(x->id()),
                    std::string(reinterpret_cast<const char*>(v->bytes().data()), v->size()))
                .ok());
    const VersionId ids[] = {x->id(), v->id()};
    REQUIRE(raw.set(writer.index_item("/k"), SharedStore::encode_index(ids)).ok());
    SharedStore reader(shared_options(server, "poison"));
    const auto got = lookup_of(loop, reader, "/k", ids);
    REQUIRE(got.calls == 1);
    CHECK(same_bytes(got.value, v));  // x's item failed its check; v's is good.
    CHECK(reader.stats().shared_corrupt == 1);
  }
  CHECK(loop.close() == 0);
}

TEST_CASE("With memcached gone every answer comes from memory, in bounded time",
          "[version_store][shared]") {
  auto server = std::make_unique<test::MemcachedServer>();
  uv::Loop loop;
  auto options = shared_options(*server, "down");
  options.memcached_timeout = std::chrono::milliseconds(50);
  SharedStore store(options);
  const auto v = blob_of(1000, 7);
  store.put("/k", v);
  store.flush();
  server->kill();

  const auto start = std::chrono::steady_clock::now();
  const auto w = blob_of(1000, 8);
  store.put("/k", w);  // Memory at once; memcached fails in the background.
  for (int i = 0; i < 20; ++i) {
    CHECK(listed(loop, store, "/k") == Ids{w->id(), v->id()});
    CHECK(same_bytes(find(loop, store, "/k", v->id()), v));
    CHECK(find(loop, store, "/k", VersionId{1, 2}) == nullptr);
  }
  const auto took = std::chrono::steady_clock::now() - start;
  // 60 answers: the first failure costs up to the timeout, then the ejected server is skipped.
  CHECK(took < std::chrono::seconds(3));
  CHECK(store.stats().shared_errors >= 1);
  CHECK(loop.close() == 0);
}

TEST_CASE("A body larger than a memcached item stays in memory", "[version_store][shared]") {
  test::MemcachedServer server;
  uv::Loop loop;
  auto options = shared_options(server, "large");
  options.memcached_max_item = 10000;
  SharedStore a(options);
  SharedStore b(options);
  const auto small = blob_of(9000, 9), large = blob_of(20000, 10);
  a.put("/k", small);
  a.put("/k", large);
  a.flush();
  CHECK(a.stats().shared_writes == 1);
  CHECK(listed(loop, a, "/k") == Ids{small->id(), large->id()});  // Memory's too (after).
  CHECK(listed(loop, b, "/k") == Ids{small->id()});
  CHECK(same_bytes(find(loop, a, "/k", large->id()), large));
  CHECK(find(loop, b, "/k", large->id()) == nullptr);
  CHECK(loop.close() == 0);
}

TEST_CASE("Concurrent writers of one key keep each other's ids", "[version_store][shared]") {
  // Before appending, 4 writers of 8 ids each lost 2 to 4 of the 32 to compare-and-swap races.
  test::MemcachedServer server;
  uv::Loop loop;
  auto options = shared_options(server, "writers");
  options.max_versions_per_key = 64;
  constexpr int kStores = 4, kEach = 8;
  std::vector<std::unique_ptr<SharedStore>> stores;
  for (int i = 0; i < kStores; ++i) stores.push_back(std::make_unique<SharedStore>(options));
  std::vector<BlobRef> blobs;
  for (int n = 0; n < kEach; ++n) {
    for (int i = 0; i < kStores; ++i) {
      blobs.push_back(blob_of(500, static_cast<uint32_t>(100 + n * kStores + i)));
      stores[static_cast<size_t>(i)]->put("/k", blobs.back());
    }
  }
  for (auto& s : stores) s->flush();
  SharedStore reader(options);
  const Ids ids = listed(loop, reader, "/k");
  CHECK(ids.size() == blobs.size());
  for (const auto& b : blobs) CHECK(std::find(ids.begin(), ids.end(), b->id()) != ids.end());
  CHECK(loop.close() == 0);
}

TEST_CASE("A key asked for often within memcached_index_fresh is answered by memory alone",
          "[version_store][shared]") {
  test::MemcachedServer server;
  uv::Loop loop;
  const auto v1 = blob_of(3000, 21), v2 = blob_of(3000, 22);
  for (const auto fresh :
       {std::chrono::milliseconds(10 * 60 * 1000), std::chrono::milliseconds(0)}) {
    INFO("memcached_index_fresh " << fresh.count() << " ms");
    auto options = shared_options(server, "fresh-" + std::to_string(fresh.count()));
    options.memcached_index_fresh = fresh;
    SharedStore reader(options), writer(options);
    reader.put("/hot", v1);
    reader.flush();
    // The first calls of the window read memcached: a key asked now and then is always read.
    for (uint32_t n = 0; n < SharedStore::kAskedBeforeHot - 1; ++n) {
      CHECK(listed(loop, reader, "/hot") == Ids{v1->id()});
    }
    writer.put("/hot", v2);  // Another daemon's newer version.
    writer.flush();
    CHECK(listed(loop, reader, "/hot") == (Ids{v2->id(), v1->id()}));  // Still read.
    writer.put("/hot", blob_of(3000, 23));
    writer.flush();
    // Asked for more than kAskedBeforeHot times in the window: memory answers alone and misses
    // the newest; without a window, memcached names it.
    const Ids got = listed(loop, reader, "/hot");
    REQUIRE_FALSE(got.empty());
    CHECK((got.front() == blob_of(3000, 23)->id()) == (fresh.count() == 0));
  }
  CHECK(loop.close() == 0);
}

TEST_CASE("An index item decodes only from its own form", "[version_store][shared]") {
  const Ids ids{VersionId{1, 2}, VersionId{3, 4}};
  const std::string bytes = SharedStore::encode_index(ids);
  CHECK(SharedStore::decode_index(bytes) == ids);
  CHECK(SharedStore::decode_index(SharedStore::encode_index({})) == Ids{});
  CHECK_FALSE(SharedStore::decode_index(""));
  CHECK_FALSE(SharedStore::decode_index("CGI0"));
  CHECK_FALSE(SharedStore::decode_index(bytes.substr(0, bytes.size() - 1)));
  // Appended entries: the last appended is the newest, and an id appended again moves up.
  const std::string appended =
      bytes + SharedStore::index_entry(VersionId{5, 6}) + SharedStore::index_entry(VersionId{3, 4});
  CHECK(SharedStore::decode_index(appended) == Ids{VersionId{3, 4}, VersionId{5, 6}, {1, 2}});
  const Ids many(SharedStore::kMaxIndexEntries + 1, VersionId{0, 0});
  CHECK_FALSE(SharedStore::decode_index(SharedStore::encode_index(many)));
}
