#include "common/store/shared_store.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "common/obs/log.h"

namespace coilgun {
namespace {

using proto::VersionId;
using Clock = std::chrono::steady_clock;

constexpr char kIndexMagic[] = "CGI1";  // Then 16 bytes per id, oldest (first appended) first.
constexpr size_t kIndexMagicSize = 4;

std::string_view as_chars(std::span<const uint8_t> bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

std::span<const uint8_t> as_bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// The ids of |first|, then of |then|, each once, at most |k|.
std::vector<VersionId> merged(const std::vector<VersionId>& first,
                              const std::vector<VersionId>& then, size_t k) {
  std::vector<VersionId> out;
  for (const auto* list : {&first, &then}) {
    for (const VersionId& id : *list) {
      if (out.size() == k) return out;
      if (std::find(out.begin(), out.end(), id) == out.end()) out.push_back(id);
    }
  }
  return out;
}

// Posts |value| to the caller of a store call, on its loop, unless the call was cancelled.
template <typename T>
struct Reply {
  std::shared_ptr<bool> flag;
  std::function<void(T)> done;
  std::shared_ptr<uv::Mailbox> mailbox;

  void send(T value) const {
    mailbox->post([flag = flag, done = done, value = std::move(value)]() mutable {
      if (Pending::take(flag)) done(std::move(value));
    });
  }
};

template <typename T>
Reply<T> reply_to(uv::Loop& loop, std::function<void(T)> done, Pending& pending) {
  Reply<T> r;
  pending = Pending::make(r.flag);
  r.done = std::move(done);
  r.mailbox = loop.mailbox();
  return r;
}

}  // namespace

SharedStore::SharedStore(const VersionStoreOptions& options)
    : options_(options),
      max_versions_(std::max<size_t>(1, options.max_versions_per_key)),
      prefix_("cg1/" + VersionId::of(as_bytes(options.scope)).to_hex().substr(0, 16) + "/"),
      front_(options),
      thread_([this] { thread_main(); }) {}

SharedStore::~SharedStore() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

// ---- The calls ------------------------------------------------------------------------------

Pending SharedStore::versions(uv::Loop& loop, std::string_view key, VersionsCallback done) {
  std::vector<VersionId> local = front_.held(key);
  std::string item = index_item(key);
  if (!local.empty() && hot_and_known(item)) {
    return answer_later(loop, std::move(done), std::move(local));
  }
  Pending pending;
  Reply<std::vector<VersionId>> reply = reply_to(loop, std::move(done), pending);
  const bool queued = enqueue(
      [this, reply, local, item, key = std::string(key),
       queued = Clock::now()](MemcachedClient& mc) {
        std::optional<std::vector<VersionId>> shared;
        if (fresh(queued)) shared = read_index(mc, item);
        if (shared) note_index_read(item);
        const std::vector<VersionId> held =
            shared ? merged(held_now(item, std::move(*shared)), local, max_versions_) : local;
        reply.send(held);
        // The base the answer will most likely name, fetched while the request is away (its
        // blob alone: the index was just read).
        if (!shared || held.empty() ||
            front_.find(key, {&held.front(), 1}, Want::kBytes) != nullptr) {
          return;
        }
        const std::string blob = blob_item(held.front());
        auto got = mc.get({&blob, 1});
        note(got.status());
        if (got.ok() && adopt(key, {held.front()}, held, *got) != nullptr) ++shared_hits_;
      },
      false);
  if (!queued) return answer_later(loop, reply.done, std::move(local));
  return pending;
}

bool SharedStore::hot_and_known(const std::string& item) {
  if (options_.memcached_index_fresh.count() == 0) return false;  // The rule is off.
  const Clock::time_point now = Clock::now();
  std::lock_guard lock(mu_);
  const auto it = index_reads_.find(item);
  if (it == index_reads_.end() || now - it->second.window >= options_.memcached_index_fresh) {
    // Bounded: a window older than memcached_index_fresh is worth nothing, so a full map starts
    // over.
    if (index_reads_.size() >= kMaxIndexReads) index_reads_.clear();
    index_reads_[item] = IndexReads{.window = now, .asked = 1};
    return false;
  }
  return it->second.read && ++it->second.asked > kAskedBeforeHot;
}

void SharedStore::note_index_read(const std::string& item) {
  const Clock::time_point now = Clock::now();
  std::lock_guard lock(mu_);
  const auto it = index_reads_.find(item);
  if (it != index_reads_.end() && now - it->second.window < options_.memcached_index_fresh) {
    it->second.read = true;
  }
}

Pending SharedStore::lookup(uv::Loop& loop, std::string_view key, std::span<const VersionId> ids,
                            Want want, LookupCallback done) {
  BlobRef local = front_.find(key, ids, want);
  if (ids.empty() || (local != nullptr && local->id() == ids.front())) {  // Nothing to ask for.
    ++(local ? hits_ : misses_);
    return answer_later(loop, std::move(done), std::move(local));
  }
  // The ids before the one memory has (all of them when it has none).
  std::vector<VersionId> candidates(ids.begin(), ids.end());
  if (local != nullptr) {
    candidates.erase(std::find(candidates.begin(), candidates.end(), local->id()),
                     candidates.end());
  }
  if (candidates.empty()) {
    ++(local ? hits_ : misses_);
    return answer_later(loop, std::move(done), std::move(local));
  }
  Pending pending;
  Reply<BlobRef> reply = reply_to(loop, std::move(done), pending);
  if (want == Want::kPrepared) {
    // The index is built on the caller's thread, as the memory tier does, not on this one.
    reply.done = [inner = std::move(reply.done)](BlobRef b) {
      if (b != nullptr) (void)b->prepared();
      inner(std::move(b));
    };
  }
  const bool queued = enqueue(
      [this, reply, local, candidates, key = std::string(key),
       queued = Clock::now()](MemcachedClient& mc) {
        // A versions() call may have brought the blob in meanwhile (the index, if wanted, is
        // built on the caller's thread: above).
        BlobRef found = front_.find(key, candidates, Want::kBytes);
        if (found == nullptr && fresh(queued)) {
          found = fetch(mc, key, candidates);
          if (found != nullptr) ++shared_hits_;
        }
        if (found == nullptr) found = local;
        ++(found ? hits_ : misses_);
        reply.send(std::move(found));
      },
      false);
  if (queued) return pending;
  ++(local ? hits_ : misses_);
  return answer_later(loop, reply.done, std::move(local));
}

void SharedStore::put(std::string_view key, BlobRef blob) {
  // A version memory already holds as the key's newest went to memcached when it got there.
  const std::vector<VersionId> before = blob ? front_.held(key) : std::vector<VersionId>{};
  front_.put(key, blob);
  if (blob == nullptr || blob->size() > options_.memcached_max_item) return;
  if (!before.empty() && before.front() == blob->id()) return;
  const std::string item = index_item(key);
  pending(item, blob->id(), true);
  if (!enqueue(
          [this, key = std::string(key), item, blob](MemcachedClient& mc) {
            write(mc, key, blob);
            pending(item, blob->id(), false);
          },
          true)) {
    pending(item, blob->id(), false);
    ++shared_dropped_;
  }
}

void SharedStore::pending(const std::string& item, VersionId id, bool add) {
  std::lock_guard lock(mu_);
  std::vector<VersionId>& ids = pending_[item];
  if (add) {
    ids.insert(ids.begin(), id);
  } else if (const auto it = std::find(ids.rbegin(), ids.rend(), id); it != ids.rend()) {
    ids.erase(std::next(it).base());
  }
  if (ids.empty()) pending_.erase(item);
}

std::vector<VersionId> SharedStore::held_now(const std::string& item,
                                             std::vector<VersionId> index) {
  std::lock_guard lock(mu_);
  const auto it = pending_.find(item);
  if (it == pending_.end()) {
    if (index.size() > max_versions_) index.resize(max_versions_);
    return index;
  }
  return merged(it->second, index, max_versions_);
}

VersionStoreStats SharedStore::stats() const {
  VersionStoreStats s = front_.stats();
  s.inserts -= std::min(s.inserts, adopted_.load());  // Counted as shared hits, not puts.
  s.hits = hits_.load();
  s.misses = misses_.load();
  s.shared_hits = shared_hits_.load();
  s.shared_errors = shared_errors_.load();
  s.shared_corrupt = shared_corrupt_.load();
  s.shared_writes = shared_writes_.load();
  s.shared_dropped = shared_dropped_.load();
  return s;
}

void SharedStore::flush() {
  std::unique_lock lock(mu_);
  drained_.wait(lock,
                [this] { return (reads_.empty() && writes_.empty() && !busy_) || stopping_; });
}

// ---- Items ----------------------------------------------------------------------------------

std::string SharedStore::index_item(std::string_view key) const {
  return prefix_ + "i/" + VersionId::of(as_bytes(key)).to_hex();
}

std::string SharedStore::blob_item(VersionId id) const { return prefix_ + "b/" + id.to_hex(); }

std::string SharedStore::index_entry(VersionId id) {
  uint8_t raw[16];
  id.to_bytes(raw);
  return std::string(reinterpret_cast<const char*>(raw), sizeof(raw));
}

std::string SharedStore::encode_index(std::span<const VersionId> ids) {
  std::string out(kIndexMagic, kIndexMagicSize);
  for (auto it = ids.rbegin(); it != ids.rend(); ++it) out += index_entry(*it);
  return out;
}

std::optional<std::vector<VersionId>> SharedStore::decode_index(std::string_view bytes) {
  if (bytes.size() < kIndexMagicSize || bytes.substr(0, kIndexMagicSize) != kIndexMagic ||
      (bytes.size() - kIndexMagicSize) % 16 != 0 ||
      (bytes.size() - kIndexMagicSize) / 16 > kMaxIndexEntries) {
    return std::nullopt;
  }
  std::vector<VersionId> ids;  // Newest (last appended) first, each once.
  for (size_t at = bytes.size(); at > kIndexMagicSize; at -= 16) {
    const auto* raw = reinterpret_cast<const uint8_t*>(bytes.data() + at - 16);
    const VersionId id = VersionId::from_bytes(raw);
    if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
  }
  return ids;
}

// ---- The store thread -----------------------------------------------------------------------

bool SharedStore::enqueue(Task task, bool write) {
  {
    std::lock_guard lock(mu_);
    std::deque<Task>& queue = write ? writes_ : reads_;
    if (stopping_ || queue.size() >= kMaxQueue) return false;
    queue.push_back(std::move(task));
  }
  wake_.notify_one();
  return true;
}

void SharedStore::thread_main() {
  MemcachedClient mc(options_);
  std::optional<Clock::time_point> deadline;  // Set once stopping: the writes' last second.
  for (;;) {
    Task task;
    {
      std::unique_lock lock(mu_);
      busy_ = false;
      if (reads_.empty() && writes_.empty()) drained_.notify_all();
      wake_.wait(lock, [this] { return stopping_ || !reads_.empty() || !writes_.empty(); });
      if (stopping_) {
        // Reads have no one left to answer; writes go on while there is time.
        if (!deadline) deadline = Clock::now() + std::chrono::seconds(1);
        reads_.clear();
        if (Clock::now() > *deadline) writes_.clear();
        if (writes_.empty()) {
          drained_.notify_all();
          return;
        }
      }
      // A request waits behind reads only, never behind the writes' backlog.
      std::deque<Task>& queue = reads_.empty() ? writes_ : reads_;
      task = std::move(queue.front());
      queue.pop_front();
      busy_ = true;
    }
    task(mc);
  }
}

bool SharedStore::fresh(Clock::time_point queued) {
  if (Clock::now() - queued <= options_.memcached_timeout) return true;
  ++shared_dropped_;
  return false;
}

void SharedStore::note(const Status& s) {
  if (s.ok()) return;
  ++shared_errors_;
  const auto now =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch());
  if (const uint64_t n = failures_.occurred(static_cast<uint64_t>(now.count()))) {
    log::warn("memcached unavailable: versions come from memory until it answers",
              {{"error", s.to_string()}, {"count", n}});
  }
}

std::optional<std::vector<VersionId>> SharedStore::read_index(MemcachedClient& mc,
                                                              const std::string& item) {
  auto got = mc.get({&item, 1});
  note(got.status());
  if (!got.ok()) return std::nullopt;
  const auto it = got->find(item);
  if (it == got->end()) return std::vector<VersionId>{};
  auto ids = decode_index(it->second.value);
  if (!ids) {
    ++shared_corrupt_;
    return std::vector<VersionId>{};
  }
  return ids;
}

BlobRef SharedStore::fetch(MemcachedClient& mc, const std::string& key,
                           const std::vector<VersionId>& candidates) {
  std::vector<std::string> items{index_item(key)};
  for (const VersionId& id : candidates) items.push_back(blob_item(id));
  auto got = mc.get(items);
  note(got.status());
  if (!got.ok()) return nullptr;
  const auto index = got->find(items[0]);
  if (index == got->end()) return nullptr;
  auto decoded = decode_index(index->second.value);
  if (!decoded) {
    ++shared_corrupt_;
    return nullptr;
  }
  return adopt(key, candidates, held_now(items[0], std::move(*decoded)), *got);
}

BlobRef SharedStore::adopt(const std::string& key, const std::vector<VersionId>& candidates,
                           const std::vector<VersionId>& held, const MemcachedClient::Items& got) {
  for (const VersionId& id : candidates) {
    if (std::find(held.begin(), held.end(), id) == held.end()) continue;
    const auto blob = got.find(blob_item(id));
    if (blob == got.end()) continue;
    const std::span<const uint8_t> bytes = as_bytes(blob->second.value);
    if (VersionId::of(bytes) != id) {  // Never a wrong byte: a bad item is a miss.
      ++shared_corrupt_;
      continue;
    }
    BlobRef found = Blob::make(std::vector<uint8_t>(bytes.begin(), bytes.end()), id);
    front_.put(key, found);
    ++adopted_;
    return found;
  }
  return nullptr;
}

// The blob, then its id on the key's index.
void SharedStore::write(MemcachedClient& mc, const std::string& key, const BlobRef& blob) {
  Status s = mc.set(blob_item(blob->id()), as_chars(blob->bytes()));
  note(s);
  if (!s.ok()) return;
  const std::string item = index_item(key);
  for (int attempt = 0; attempt < kIndexTries; ++attempt) {
    auto added = add_to_index(mc, item, blob->id());
    note(added.status());
    if (!added.ok()) return;
    if (*added) {
      ++shared_writes_;
      return;
    }
  }
}

Result<bool> SharedStore::add_to_index(MemcachedClient& mc, const std::string& item, VersionId id) {
  auto got = mc.get({&item, 1});
  if (!got.ok()) return got.status();
  const auto it = got->find(item);
  if (it == got->end()) return mc.swap(item, encode_index({&id, 1}), 0);  // Absent: add.
  const std::string& bytes = it->second.value;
  const auto held = decode_index(bytes);
  if (!held) ++shared_corrupt_;  // Replaced by a good one.
  const size_t entries = (bytes.size() - std::min(bytes.size(), kIndexMagicSize)) / 16;
  if (held && entries < 4 * max_versions_) return mc.append(item, index_entry(id));
  // Long (or bad): the newest K, this id first, if no one wrote in between.
  std::vector<VersionId> ids{id};
  if (held) ids = merged(std::move(ids), *held, max_versions_);
  return mc.swap(item, encode_index(ids), it->second.cas);
}

}  // namespace coilgun
