#pragma once
// coilgun-origin's logic: accepts tunnels from edges and serves their streams from the
// backend web server.
//
// Per worker (AgentWorker, one per loop thread): the tunnel listener, the tunnels from edges
// (EdgeLink, edge_link.h) with their exchanges (Exchange, exchange.h), the keep-alive pool to
// the backend, the delta encoder and the base policy's state per cache key. Shared: what all
// workers share, made by main() and outliving them.
//
// Ownership: a worker owns its links from the accept until they close, then deletes them on a
// later loop turn; its keys' states outlive them (exchanges hold their key's state).

#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/daemon/config.h"
#include "common/daemon/daemon.h"
#include "common/daemon/settings.h"
#include "common/http/client.h"
#include "common/obs/log.h"
#include "common/store/version_store.h"
#include "origin/edge_link.h"
#include "origin/handshake_gate.h"
#include "proto/delta.h"

namespace coilgun::origin {

using Settings = daemon::Settings<config::OriginConfig>;

// What every worker of the agent shares; outlives them. Settings are replaced whole on SIGHUP:
// take a snapshot (now()) when starting a piece of work and keep it for that work.
struct Shared {
  daemon::Reloadable<Settings>& settings;
  VersionStore& store;
  daemon::Metrics& metrics;
  // Connections of all workers still in the TLS handshake (tunnel.max_pending_handshakes).
  HandshakeGate handshakes;
  // The "tunnel refused" warning for failed handshakes: at most one a second, with a count.
  log::ReportLimiter handshake_failures;
  std::shared_ptr<const Settings> now() const { return settings.get(); }
};

class AgentWorker : public daemon::Worker {
 public:
  AgentWorker(uv::Loop& loop, Shared& shared, unsigned index);
  ~AgentWorker() override;

  Result<uint16_t> start(uint16_t port_override) override;
  void drain() override;
  bool drained() const override { return links_.empty(); }
  void stop() override;

  uv::Loop& loop() { return loop_; }
  Shared& shared() { return shared_; }
  // The backend pool is built once (backend and backend_pool are restart-only keys).
  http::ClientPool& backend() { return backend_; }
  // The encoder for |delta| (rebuilt when a reload changed it).
  proto::DeltaEncoder& encoder(const config::DeltaConfig& delta);
  // A link closed: drop it (on a later turn).
  void link_closed(EdgeLink* link);

  // The base policy (proto/PROTOCOL.md §6), per cache key on this worker: the newest base it
  // made, since when, whether a request has listed it back, and how many exchanges for the key
  // are running. An exchange holds its key's state for its life (running counts it).
  struct KeyState {
    proto::VersionId base;
    uint64_t since_ms = 0;  // 0: no base made yet.
    bool confirmed = true;
    uint32_t running = 0;
  };
  // Counts a new exchange for |key| whose request listed |held|, and returns the key's state.
  std::shared_ptr<KeyState> key_started(const std::string& key,
                                        std::span<const proto::VersionId> held);
  // Whether version |id| may become the key's base now; if so records it (unconfirmed).
  // At most one unconfirmed base; and while other exchanges for the key run, a base is kept
  // at least kMinBaseAgeMs, so queued work still finds the bases it listed.
  bool claim_base(KeyState& key, proto::VersionId id);

 private:
  void on_accept(std::unique_ptr<uv::TcpStream> socket);
  // Closes this worker's oldest connection still in the handshake, if it has one.
  bool give_way(uint32_t limit);
  // Counts (and logs, at most once a second) a connection closed for the handshake limits:
  // refused at accept (the socket closes as it goes) or given way.
  void refuse(const std::string& peer, uint32_t limit);

  uv::Loop& loop_;
  Shared& shared_;
  unsigned index_;
  metrics::Counter& refused_;  // coilgun_errors_total{reason="tunnel_handshake_limit"}
  uv::TcpListener listener_;
  http::ClientPool backend_;
  config::DeltaConfig encoder_config_;
  std::unique_ptr<proto::DeltaEncoder> encoder_;
  std::unordered_map<std::string, std::shared_ptr<KeyState>>
      keys_;  // Before links_: outlives them.
  std::vector<std::unique_ptr<EdgeLink>> links_;
  bool draining_ = false;
  // A base not listed back after this long is taken as lost (the exchange failed, the edge
  // evicted it): a new one may be claimed.
  static constexpr uint64_t kPendingBaseMs = 1000;
  static constexpr uint64_t kMinBaseAgeMs = 1000;
  // Idle, old entries are swept once this many keys are held (and again when that doubled).
  static constexpr size_t kKeySweep = 4096;
  size_t keys_sweep_at_ = kKeySweep;
};

}  // namespace coilgun::origin
