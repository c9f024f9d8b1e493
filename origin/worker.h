#pragma once
// coilgun-origin's logic: accepts tunnels from edges and serves their streams from the
// backend web server.
//
// Per worker (AgentWorker, one per loop thread): the tunnel listener, the tunnels from edges
// (EdgeLink, edge_link.h) with their exchanges (Exchange, exchange.h), the keep-alive pool to
// the backend and the delta encoder. Shared: what all workers share (the store, the base
// policy, BasePolicy in base_policy.h), made by main() and outliving them.
//
// Ownership: a worker owns its links from the accept until they close, then deletes them on a
// later loop turn.

#include <memory>
#include <string>
#include <vector>

#include "common/daemon/daemon.h"
#include "common/daemon/settings.h"
#include "common/http/client.h"
#include "common/obs/log.h"
#include "common/store/version_store.h"
#include "origin/backend_health.h"
#include "origin/base_policy.h"
#include "origin/config.h"
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
  // Which versions become bases (proto/PROTOCOL.md §6), for every worker's exchanges; they pass
  // their loop's time (loop().now_ms()).
  BasePolicy base_policy;
  // What the last [backend_health] check found (worker 0 checks).
  HealthState backend_health;
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
  // New backend TLS files (an https:// backend) apply to new backend connections.
  void reloaded() override { apply_backend_tls(); }

  uv::Loop& loop() { return loop_; }
  Shared& shared() { return shared_; }
  // The backend pool is built once (backend and backend_pool are restart-only keys).
  http::ClientPool& backend() { return backend_; }
  // The encoder for |delta| (rebuilt when a reload changed it).
  proto::DeltaEncoder& encoder(const config::DeltaConfig& delta);
  // A link closed: drop it (on a later turn).
  void link_closed(EdgeLink* link);

 private:
  void on_accept(std::unique_ptr<uv::TcpStream> socket);
  // An https:// backend: the pool speaks TLS with the snapshot's context and backend_tls.name.
  void apply_backend_tls();
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
  const bool backend_https_;  // The backend of the start (restart-only) is https://.
  config::DeltaConfig encoder_config_;
  std::unique_ptr<proto::DeltaEncoder> encoder_;
  std::vector<std::unique_ptr<EdgeLink>> links_;
  std::unique_ptr<BackendHealth> health_;  // Worker 0, with backend_health.path set.
  bool draining_ = false;
};

}  // namespace coilgun::origin
