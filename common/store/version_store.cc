#include "common/store/version_store.h"

#include <utility>

#include "common/store/memcached_client.h"
#include "common/store/memory_store.h"
#include "common/store/shared_store.h"

namespace coilgun {

// ---- Blob ---------------------------------------------------------------------------------

BlobRef Blob::make(std::vector<uint8_t> bytes) {
  const proto::VersionId id = proto::VersionId::of(bytes);
  return make(std::move(bytes), id);
}

BlobRef Blob::make(std::vector<uint8_t> bytes, proto::VersionId id) {
  return std::make_shared<const Blob>(Passkey(), std::move(bytes), id);
}

Blob::Blob(Passkey, std::vector<uint8_t> bytes, proto::VersionId id)
    : bytes_(std::move(bytes)), id_(id) {}

const proto::PreparedBase& Blob::prepared() const {
  std::call_once(prepare_once_, [this] {
    prepared_.emplace(std::span<const uint8_t>(bytes_), id_);
    prepared_ready_.store(true, std::memory_order_release);
  });
  return *prepared_;
}

size_t Blob::memory_bytes() const {
  // prepared_ is written once, before prepared_ready_ is set; the acquire load makes the
  // finished object visible, and it never changes afterwards.
  if (!prepared_ready_.load(std::memory_order_acquire)) {
    return bytes_.size();
  }
  return bytes_.size() + prepared_->index_bytes();
}

std::string MemcachedServer::str() const {
  const bool v6 = host.find(':') != std::string::npos;
  std::string out = v6 ? "[" + host + "]" : host;
  out += ":";
  out += std::to_string(port);
  return out;
}

// ---- The factory --------------------------------------------------------------------------

std::unique_ptr<VersionStore> make_version_store(const VersionStoreOptions& options) {
  if (!options.memcached.empty()) return std::make_unique<SharedStore>(options);
  return std::make_unique<MemoryVersionStore>(options);
}

std::vector<std::pair<std::string, std::string>> probe_memcached(
    const VersionStoreOptions& options) {
  if (options.memcached.empty()) return {};
  return MemcachedClient(options).probe();
}

}  // namespace coilgun
