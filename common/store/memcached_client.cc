#include "common/store/memcached_client.h"

#include <libmemcached/memcached.h>

#include <algorithm>
#include <cctype>
#include <string_view>
#include <utility>

namespace coilgun {
namespace {

// The behaviour memcached_st gets: see the header.
void configure(memcached_st* mc, const VersionStoreOptions& o) {
  const auto ms = static_cast<uint64_t>(o.memcached_timeout.count());
  memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_DISTRIBUTION,
                         MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA);
  memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1);
  memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_SUPPORT_CAS, 1);
  memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_TCP_NODELAY, 1);
  memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, ms);     // ms
  memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, ms);        // ms
  memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_SND_TIMEOUT, ms * 1000);  // us
  memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_RCV_TIMEOUT, ms * 1000);  // us
  memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_SERVER_FAILURE_LIMIT, 1);
  memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_REMOVE_FAILED_SERVERS, 1);
  // Whole seconds, at least one.
  const auto retry_s = std::max<int64_t>(1, (o.memcached_retry.count() + 999) / 1000);
  memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_RETRY_TIMEOUT, static_cast<uint64_t>(retry_s));
  memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_DEAD_TIMEOUT, static_cast<uint64_t>(retry_s));
  if (!o.memcached_username.empty()) {
    // SASL needs memcached's binary protocol; libmemcached authenticates each connection.
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_BINARY_PROTOCOL, 1);
    memcached_set_sasl_auth_data(mc, o.memcached_username.c_str(), o.memcached_password.c_str());
  }
}

memcached_st* make(const VersionStoreOptions& o, std::span<const MemcachedServer> servers) {
  memcached_st* mc = memcached_create(nullptr);
  if (mc == nullptr) return nullptr;
  configure(mc, o);
  for (const MemcachedServer& s : servers) memcached_server_add(mc, s.host.c_str(), s.port);
  return mc;
}

// "(0x55..) CONNECTION FAILURE,  host: h:p -> ./src/libmemcached/version.cc:40" ->
// "connection failure": libmemcached's message without its pointer, host and source line.
std::string plain_error(std::string_view m) {
  if (!m.empty() && m.front() == '(') m.remove_prefix(std::min(m.size(), m.find(") ") + 2));
  m = m.substr(0, std::min({m.find(','), m.find(" ->"), m.size()}));
  std::string out(m);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

MemcachedClient::MemcachedClient(const VersionStoreOptions& options)
    : options_(options), mc_(make(options, options.memcached)) {}

MemcachedClient::~MemcachedClient() {
  if (mc_ != nullptr) memcached_free(mc_);
}

Status MemcachedClient::error(int rc) const {
  const auto r = static_cast<memcached_return_t>(rc);
  const Code code = r == MEMCACHED_TIMEOUT ? Code::kTimeout : Code::kIo;
  // memcached_strerror's strings are static, as a Status message must be.
  return Status(code, memcached_strerror(mc_, r), Side::kUpstream, true);
}

Result<MemcachedClient::Items> MemcachedClient::get(std::span<const std::string> keys) {
  if (mc_ == nullptr) return Status(Code::kInternal, "memcached client not created");
  Items items;
  if (keys.empty()) return items;
  std::vector<const char*> ptrs;
  std::vector<size_t> lengths;
  for (const std::string& k : keys) {
    ptrs.push_back(k.data());
    lengths.push_back(k.size());
  }
  memcached_return_t rc = memcached_mget(mc_, ptrs.data(), lengths.data(), keys.size());
  if (rc != MEMCACHED_SUCCESS) return error(rc);
  // On the stack: libmemcached frees a result it allocated itself when the fetch ends, and
  // frees only the value of one it was given.
  memcached_result_st storage;
  memcached_result_st* result = memcached_result_create(mc_, &storage);
  if (result == nullptr) return Status(Code::kInternal, "memcached result not created");
  Status failed;
  // The fetch loop ends with MEMCACHED_END (all answered) or an error from some server; the
  // items that did arrive are still good.
  while (memcached_fetch_result(mc_, result, &rc) != nullptr) {
    items[std::string(memcached_result_key_value(result), memcached_result_key_length(result))] =
        Item{std::string(memcached_result_value(result), memcached_result_length(result)),
             memcached_result_cas(result)};
  }
  if (rc != MEMCACHED_END && rc != MEMCACHED_SUCCESS && rc != MEMCACHED_NOTFOUND) {
    failed = error(rc);
  }
  memcached_result_free(result);
  if (!failed.ok() && items.empty()) return failed;
  return items;
}

Status MemcachedClient::set(std::string_view key, std::string_view value) {
  if (mc_ == nullptr) return Status(Code::kInternal, "memcached client not created");
  const memcached_return_t rc =
      memcached_set(mc_, key.data(), key.size(), value.data(), value.size(), 0, 0);
  if (rc != MEMCACHED_SUCCESS) return error(rc);
  return Status::Ok();
}

Result<bool> MemcachedClient::append(std::string_view key, std::string_view value) {
  if (mc_ == nullptr) return Status(Code::kInternal, "memcached client not created");
  const memcached_return_t rc =
      memcached_append(mc_, key.data(), key.size(), value.data(), value.size(), 0, 0);
  if (rc == MEMCACHED_SUCCESS) return true;
  if (rc == MEMCACHED_NOTSTORED || rc == MEMCACHED_NOTFOUND) return false;
  return error(rc);
}

Result<bool> MemcachedClient::swap(std::string_view key, std::string_view value, uint64_t cas) {
  if (mc_ == nullptr) return Status(Code::kInternal, "memcached client not created");
  const memcached_return_t rc =
      cas == 0 ? memcached_add(mc_, key.data(), key.size(), value.data(), value.size(), 0, 0)
               : memcached_cas(mc_, key.data(), key.size(), value.data(), value.size(), 0, 0, cas);
  if (rc == MEMCACHED_SUCCESS) return true;
  if (rc == MEMCACHED_DATA_EXISTS || rc == MEMCACHED_NOTSTORED || rc == MEMCACHED_NOTFOUND) {
    return false;
  }
  return error(rc);
}

std::vector<std::pair<std::string, std::string>> MemcachedClient::probe() const {
  std::vector<std::pair<std::string, std::string>> out;
  for (const MemcachedServer& s : options_.memcached) {
    memcached_st* one = make(options_, {&s, 1});
    std::string why = "memcached client not created";
    if (one != nullptr) {
      const memcached_return_t rc = memcached_version(one);
      why = rc == MEMCACHED_SUCCESS ? "" : plain_error(memcached_last_error_message(one));
      if (why.empty() && rc != MEMCACHED_SUCCESS) why = memcached_strerror(one, rc);
      memcached_free(one);
    }
    out.emplace_back(s.str(), why);
  }
  return out;
}

}  // namespace coilgun
