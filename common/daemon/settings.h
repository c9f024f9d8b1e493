#pragma once
// What a worker reads of its daemon's settings: the immutable snapshot (configuration and TLS
// context) replaced whole on SIGHUP, and the tunnel session options derived from it. main()'s
// part (loading, one-shot modes, reload) is start_up.h.
//
// Workers read the current snapshot through Reloadable::get() when they start a piece of work
// (an exchange, a tunnel connection) and keep it for that work's life: a reload never changes
// settings under running work, and live tunnels stay up with the certificates they were made
// with.

#include <atomic>
#include <cstdint>
#include <memory>

#include "common/tls/tls.h"
#include "common/tunnel/session.h"

namespace coilgun::daemon {

// A value replaced whole (on SIGHUP) and read by any thread.
template <typename T>
class Reloadable {
 public:
  explicit Reloadable(std::shared_ptr<const T> value) : value_(std::move(value)) {}
  std::shared_ptr<const T> get() const { return value_.load(std::memory_order_acquire); }
  void set(std::shared_ptr<const T> value) {
    value_.store(std::move(value), std::memory_order_release);
  }

 private:
  std::atomic<std::shared_ptr<const T>> value_;
};

// One daemon's configuration and the TLS contexts built from it.
template <typename Config>
struct Settings {
  Config config;
  std::shared_ptr<const tls::TlsContext> tls;  // The tunnel's.
  // tls::TlsContext::web_client for the edge's https:// fallbacks or the agent's https://
  // backend; null when there is none.
  std::shared_ptr<const tls::TlsContext> web_tls = nullptr;
  // From [store] memcached_password_file ("" without SASL): read once, with the snapshot.
  std::string memcached_password{};
};

// The tunnel session options both daemons derive from their [tunnel] and [limits] tables; a
// ping unanswered for three intervals means a dead link.
template <typename Config>
tunnel::SessionOptions session_options(const Config& c, bool client) {
  tunnel::SessionOptions o;
  o.client = client;
  o.stream_window = static_cast<uint32_t>(c.tunnel.stream_window);
  o.connection_window = static_cast<uint32_t>(c.tunnel.connection_window);
  if constexpr (requires { c.tunnel.max_streams; }) o.max_streams = c.tunnel.max_streams;
  o.max_header_block = c.limits.max_header_bytes;
  o.ping_interval_ms = static_cast<uint64_t>(c.tunnel.ping_interval.count());
  o.ping_timeout_ms = 3 * o.ping_interval_ms;
  if constexpr (requires { c.tunnel.answer_timeout; }) {
    o.answer_timeout_ms = static_cast<uint64_t>(c.tunnel.answer_timeout.count());
  }
  return o;
}

}  // namespace coilgun::daemon
