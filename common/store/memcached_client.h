#pragma once
// A blocking client for a set of memcached servers: libmemcached (Debian libmemcached-dev) with
// the behaviour a cache on the request path needs. Internal to common/store: the shared tier
// (shared_store.h) runs one on its own thread.
//
//  * Keys spread over the servers by consistent hashing (ketama), so a server lost or added
//    moves only its share of the keys.
//  * Short timeouts (connect, poll, send and receive all memcached_timeout, 100 ms by default; the
//    library's defaults are seconds), so a slow server costs a request at most that long.
//  * A server that fails once is ejected from the ring and retried after memcached_retry: while it is
//    out, its keys go to the others instead of waiting for it.
//
// Threads: one client is used by one thread at a time (a memcached_st is not thread-safe).

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/store/version_store.h"
#include "proto/status.h"

struct memcached_st;

namespace coilgun {

class MemcachedClient {
 public:
  // One item as fetched: its value and the CAS token a swap() needs.
  struct Item {
    std::string value;
    uint64_t cas = 0;
  };
  using Items = std::unordered_map<std::string, Item>;

  // Uses |options|' memcached servers, timeout and retry.
  explicit MemcachedClient(const VersionStoreOptions& options);
  ~MemcachedClient();
  MemcachedClient(const MemcachedClient&) = delete;
  MemcachedClient& operator=(const MemcachedClient&) = delete;

  // Fetches |keys| in one multi-get (one request per server that holds some). Keys missing
  // from the result are not stored. An error means no server answered in time.
  Result<Items> get(std::span<const std::string> keys);

  // Stores |value| under |key|, replacing what is there.
  Status set(std::string_view key, std::string_view value);

  // Appends |value| to what |key| holds. False if |key| holds nothing.
  Result<bool> append(std::string_view key, std::string_view value);

  // Stores |value| under |key| only if the key is unchanged since it was read with |cas|, or,
  // with |cas| 0, only if it is absent. False: someone else changed it first.
  Result<bool> swap(std::string_view key, std::string_view value, uint64_t cas);

  // Asks each server for its version, with the same timeouts: one line per server, "host:port"
  // and why it did not answer ("" where it did).
  std::vector<std::pair<std::string, std::string>> probe() const;

 private:
  Status error(int rc) const;

  VersionStoreOptions options_;
  memcached_st* mc_;
};

}  // namespace coilgun
