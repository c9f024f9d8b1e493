#pragma once
// The shared tier of the version store: the memory tier in front (hot versions, bases with
// their indexes), memcached behind, so that daemons with the same [store] scope share what any
// of them stored, and a restarted one starts warm. Internal to common/store: daemons get it
// from make_version_store() when [store] memcached names servers.
//
// In memcached (PROTOCOL.md §6 describes the items):
//   <scope>/b/<id>    a blob's bytes, content-addressed: any number of daemons writing the
//                     same version write the same item. Bodies over memcached_max_item stay in
//                     memory only (not split).
//   <scope>/i/<key>   a cache key's index: the ids stored for it, oldest first. A writer appends
//                     its id (memcached's append: concurrent writers never lose each other's
//                     ids); the one that finds it 4 x K long rewrites it to the newest K with
//                     compare-and-swap. Readers take the newest K distinct ids.
// (<scope> and <key> are hashed to keep item keys short and free of spaces.)
//
// What each call does:
//   versions()  the key's index from memcached merged with what memory holds (memcached's ids
//               first, then memory's others, at most K). A hot key is answered by memory alone:
//               one whose window (memcached_index_fresh, 20 ms, from its first call) holds a
//               read memcached answered and, counting its first call and those after that
//               answer, more than kAskedBeforeHot calls; memory must hold versions of it. A page requested all the time then costs memcached a few
//               reads per window, not one per request (one per request cost a pair at 100 KB a
//               quarter of its throughput; tests/bench/RESULTS.md), and a key asked now and
//               then (a fleet's edges taking turns) is read every time. What another daemon
//               stored meanwhile is missed: a larger delta, never a wrong byte. After
//               answering, the store thread fetches the newest id listed when memory does not
//               hold it (as lookup() does), while the request is away: the edge's lookup of the
//               base its answer names then finds it in memory, instead of a second round trip
//               after the answer came (tests/bench/RESULTS.md, Fleet).
//   lookup()    memory first (again on the store thread: a versions() call may have brought the
//               blob in meanwhile); when memory does not hold the first id asked for, one multi-get
//               of the key's index and the candidate blobs. A blob counts only if the key's
//               index names it and its bytes hash to its id: a corrupted or poisoned cache
//               costs ratio, never a wrong byte. What is found joins the memory tier.
//   put()       memory at once; memcached in the background (never on the request's path).
//
// Every memcached request runs on one thread of the store's own, reads before writes (a request
// never waits behind the writes' backlog), and its answer is posted to the caller's loop
// (uv::Mailbox). When memcached is slow or down the answers fall back to memory: a request
// waits at most memcached_timeout (plus its place among the reads: a read queued longer than
// that is answered from memory at once, without asking), the queues are bounded
// (what does not fit is answered from memory, or not written), failures are logged at warn at
// most once a minute (with their count), and VersionStoreStats counts them.
//
// Threads: every method, from any thread, as VersionStore requires.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/obs/log.h"
#include "common/store/memcached_client.h"
#include "common/store/memory_store.h"
#include "common/store/version_store.h"

namespace coilgun {

class SharedStore final : public VersionStore {
 public:
  // Reads queued beyond this many are answered from memory; writes beyond it are dropped.
  static constexpr size_t kMaxQueue = 1024;
  // Tries of one index update; each needs a race lost to another writer to fail.
  static constexpr int kIndexTries = 4;
  // An index item holding more ids than this is not one (the writers keep it near 4 x K).
  static constexpr size_t kMaxIndexEntries = 1024;
  // versions() calls of a key within one memcached_index_fresh window that still read its index.
  static constexpr uint32_t kAskedBeforeHot = 3;
  // Keys whose window is remembered, at most.
  static constexpr size_t kMaxIndexReads = 65536;

  explicit SharedStore(const VersionStoreOptions& options);
  // Runs the writes still queued for up to a second (so a daemon that stops keeps what it
  // just stored), drops the reads, and joins the thread.
  ~SharedStore() override;
  SharedStore(const SharedStore&) = delete;
  SharedStore& operator=(const SharedStore&) = delete;

  Pending versions(uv::Loop& loop, std::string_view key, VersionsCallback done) override;
  Pending lookup(uv::Loop& loop, std::string_view key, std::span<const proto::VersionId> ids,
                 Want want, LookupCallback done) override;
  void put(std::string_view key, BlobRef blob) override;
  VersionStoreStats stats() const override;

  // Returns once every request queued before the call has run.
  void flush() override;

  // Item keys, for tests.
  std::string index_item(std::string_view key) const;
  std::string blob_item(proto::VersionId id) const;

  // An index item's bytes for |ids| (newest first), and the distinct ids of an item's bytes,
  // newest first; nullopt when |bytes| is not an index item.
  static std::string encode_index(std::span<const proto::VersionId> ids);
  static std::optional<std::vector<proto::VersionId>> decode_index(std::string_view bytes);
  // One id appended to an index item's bytes.
  static std::string index_entry(proto::VersionId id);

 private:
  using Task = std::function<void(MemcachedClient&)>;

  bool enqueue(Task task, bool write);
  void thread_main();
  // Whether a read queued at |queued| is still worth asking memcached for.
  bool fresh(std::chrono::steady_clock::time_point queued);
  // The key's index as memcached has it: nullopt when memcached did not answer.
  std::optional<std::vector<proto::VersionId>> read_index(MemcachedClient& mc,
                                                          const std::string& item);
  // The blob |candidates| names first that |key|'s index holds and memcached has intact: one
  // multi-get of the index and the blobs, then adopt().
  BlobRef fetch(MemcachedClient& mc, const std::string& key,
                const std::vector<proto::VersionId>& candidates);
  // The first of |candidates| that |held| (the key's index) names and |got| holds with bytes
  // that hash to its id, put into memory; nullptr when none.
  BlobRef adopt(const std::string& key, const std::vector<proto::VersionId>& candidates,
                const std::vector<proto::VersionId>& held, const MemcachedClient::Items& got);
  void write(MemcachedClient& mc, const std::string& key, const BlobRef& blob);
  // One try at adding |id| to the index item; false when another writer got in between.
  Result<bool> add_to_index(MemcachedClient& mc, const std::string& item, proto::VersionId id);
  // Adds |id| to what is being written to |item|'s index (newest first), or removes it once
  // written (or dropped).
  void pending(const std::string& item, proto::VersionId id, bool add);
  // What |item|'s key holds: its memcached |index| with the ids still being written in front,
  // at most K. Reads go before writes, so this is how a daemon reads its own writes.
  std::vector<proto::VersionId> held_now(const std::string& item,
                                         std::vector<proto::VersionId> index);
  // Counts a versions() call of |item|'s key in its window (a new window when the last is
  // older than memcached_index_fresh): true when memory alone should answer (see versions()).
  bool hot_and_known(const std::string& item);
  // memcached answered a read of |item|: its window's key is known.
  void note_index_read(const std::string& item);
  // Counts a failed memcached request, and logs the first of each minute.
  void note(const Status& s);

  const VersionStoreOptions options_;
  const size_t max_versions_;
  const std::string prefix_;  // "cg1/<scope hash>/".
  MemoryVersionStore front_;

  std::mutex mu_;
  std::condition_variable wake_;     // A task queued, or stopping.
  std::condition_variable drained_;  // The queue emptied and the thread is idle.
  std::deque<Task> reads_;           // Answered first. Guarded by mu_.
  std::deque<Task> writes_;          // Guarded by mu_.
  // Index item -> ids queued or being written to it, newest first. Guarded by mu_.
  std::unordered_map<std::string, std::vector<proto::VersionId>> pending_;
  // A key's current window of versions() calls. Guarded by mu_.
  struct IndexReads {
    std::chrono::steady_clock::time_point window;  // When it began.
    uint32_t asked = 0;                            // Calls in it.
    bool read = false;                             // memcached answered a read in it.
  };
  std::unordered_map<std::string, IndexReads> index_reads_;  // By index item.
  bool busy_ = false;                       // The thread is running a task. Guarded by mu_.
  bool stopping_ = false;                   // Guarded by mu_.
  log::ReportLimiter failures_{60 * 1000};  // memcached failing: logged once a minute.

  std::atomic<uint64_t> hits_{0}, misses_{0}, shared_hits_{0}, shared_errors_{0},
      shared_corrupt_{0}, shared_writes_{0}, shared_dropped_{0};
  std::atomic<uint64_t> adopted_{0};  // Blobs memcached gave that memory then took (put).

  std::thread thread_;  // Last: started once everything above exists.
};

}  // namespace coilgun
