#pragma once
// Helpers shared by the version store's tests: the contract suite every tier runs
// (version_store_test.cc) and the memory tier's own tests (memory_version_store_test.cc).

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/net/loop.h"
#include "common/store/version_store.h"
#include "proto/version_id.h"
#include "tests/unit/test_pages.h"

namespace coilgun::test {

using Ids = std::vector<proto::VersionId>;

// A blob of |size| bytes whose content is determined by |seed|.
inline BlobRef blob_of(size_t size, uint32_t seed) {
  PageGen gen(seed);
  return Blob::make(gen.random_bytes(size));
}

// A new Blob object with the same bytes (hence the same id) as |b|.
inline BlobRef copy_of(const BlobRef& b) {
  return Blob::make(Bytes(b->bytes().begin(), b->bytes().end()));
}

// |prefix| followed by |n| in decimal. (Built by appending: GCC 12 warns falsely on
// "literal" + std::string temporaries.)
inline std::string numbered(std::string prefix, uint64_t n) {
  prefix += std::to_string(n);
  return prefix;
}

// The keys and blobs concurrent_workload() picks from: 40 keys, 64 blobs of 64 B to 4 KB.
inline std::vector<std::string> workload_keys() {
  std::vector<std::string> keys;
  for (int i = 0; i < 40; ++i) keys.push_back(numbered("/k", static_cast<uint64_t>(i)));
  return keys;
}
inline std::vector<BlobRef> workload_blobs() {
  std::vector<BlobRef> blobs;
  for (uint32_t i = 0; i < 64; ++i) blobs.push_back(blob_of(64 + i * 97 % 4000, 500 + i));
  return blobs;
}

// One store call run to completion on the calling thread's |loop|.
template <typename T>
struct Answer {
  T value{};
  int calls = 0;             // Times the callback ran: exactly 1 is right.
  bool during_call = false;  // It ran inside the call (the contract forbids it).
};

// Runs |loop| until |answered| (the callback that sets it stops the loop) or 5 s passed.
inline void run_until(uv::Loop& loop, const std::function<bool()>& answered) {
  if (answered()) return;
  uv::Timer guard(loop);  // Also keeps the loop running while an answer comes from elsewhere.
  // From now: the loop's clock stood still while it did not run (a concurrent workload ran
  // for seconds on other threads), and a guard counted from then fired at once.
  loop.update_time();
  guard.start(std::chrono::seconds(5), [&] { loop.stop(); });
  while (!answered() && guard.active()) loop.run();
}

// Makes a store call with |call|(callback) and runs |loop| until it answered.
template <typename T, typename Call>
Answer<T> await_answer(uv::Loop& loop, Call call) {
  Answer<T> a;
  Pending p = call([&](T value) {
    ++a.calls;
    a.value = std::move(value);
    loop.stop();
  });
  a.during_call = a.calls > 0;
  run_until(loop, [&] { return a.calls > 0; });
  return a;
}

inline Answer<Ids> versions_of(uv::Loop& loop, VersionStore& store, std::string_view key) {
  return await_answer<Ids>(loop, [&](auto done) { return store.versions(loop, key, done); });
}

inline Answer<BlobRef> lookup_of(uv::Loop& loop, VersionStore& store, std::string_view key,
                                 std::span<const proto::VersionId> ids,
                                 VersionStore::Want want = VersionStore::Want::kBytes) {
  return await_answer<BlobRef>(loop,
                               [&](auto done) { return store.lookup(loop, key, ids, want, done); });
}

// What concurrent_workload() did and saw.
struct Workload {
  uint64_t puts = 0;
  uint64_t lookups = 0;
  uint64_t callbacks = 0;  // Lookup callbacks run, hit or miss.
  uint64_t hits = 0;
  uint64_t bad = 0;  // Checks that failed (each is also a REQUIRE-worthy bug).
};

// The checks concurrent_workload() makes as it goes, on the worker threads.
struct WorkloadChecks {
  size_t max_versions_per_key = 0;  // K: no versions() list may be longer, or hold an id twice.
  VersionStore::Want want = VersionStore::Want::kBytes;  // What each lookup() asks for.
  // On each hit: true if |got| is a right answer for |want|.
  std::function<bool(const BlobRef& got, const BlobRef& want)> hit_ok = nullptr;
  // After each versions() call: true if the store's state looks right. May be empty.
  std::function<bool()> state_ok = nullptr;
};

// |threads| threads, each with its own loop, make |iterations| random calls each on |store| at
// once (half put(), a quarter lookup(), a quarter versions(), each awaited on the thread's loop)
// over |keys| and |blobs|, with seeds fixed per thread, and count what they did and any check
// that failed.
inline Workload concurrent_workload(VersionStore& store, const std::vector<std::string>& keys,
                                    const std::vector<BlobRef>& blobs, int threads, int iterations,
                                    const WorkloadChecks& checks) {
  std::atomic<uint64_t> puts{0}, lookups{0}, callbacks{0}, hits{0}, bad{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      uv::Loop loop;
      std::mt19937 rng(static_cast<uint32_t>(t) + 77);
      for (int i = 0; i < iterations; ++i) {
        const std::string& key = keys[rng() % keys.size()];
        const BlobRef& blob = blobs[rng() % blobs.size()];
        switch (rng() % 4) {
          case 0:
          case 1:
            store.put(key, blob);
            puts.fetch_add(1);
            break;
          case 2: {
            lookups.fetch_add(1);
            const proto::VersionId id = blob->id();
            const Answer<BlobRef> got = lookup_of(loop, store, key, {&id, 1}, checks.want);
            callbacks.fetch_add(static_cast<uint64_t>(got.calls));
            if (got.during_call) bad.fetch_add(1);
            if (got.value == nullptr) break;
            hits.fetch_add(1);
            if (!checks.hit_ok(got.value, blob)) bad.fetch_add(1);
            if (checks.want == VersionStore::Want::kPrepared && !got.value->is_prepared())
              bad.fetch_add(1);
            break;
          }
          default: {
            const Answer<Ids> answer = versions_of(loop, store, key);
            if (answer.calls != 1 || answer.during_call) bad.fetch_add(1);
            const Ids& ids = answer.value;
            if (ids.size() > checks.max_versions_per_key) bad.fetch_add(1);
            for (size_t a = 0; a < ids.size(); ++a) {
              for (size_t b = a + 1; b < ids.size(); ++b) {
                if (ids[a] == ids[b]) bad.fetch_add(1);
              }
            }
            if (checks.state_ok && !checks.state_ok()) bad.fetch_add(1);
          }
        }
      }
      if (loop.close() != 0) bad.fetch_add(1);
    });
  }
  for (auto& w : workers) w.join();
  return {puts.load(), lookups.load(), callbacks.load(), hits.load(), bad.load()};
}

}  // namespace coilgun::test
