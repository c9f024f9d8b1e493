#pragma once
// coilgun-origin's logic: accepts tunnels from edges and serves their streams from the
// backend web server.
//
// Per worker (AgentWorker, one per loop thread): the tunnel listener, the tunnels from edges
// (EdgeLink, edge_link.h) with their exchanges (Exchange, exchange.h), the keep-alive pool to
// the backend, the delta encoder and the base policy (BasePolicy, base_policy.h). Shared: what
// all workers share, made by main() and outliving them.
//
// Ownership: a worker owns its links from the accept until they close, then deletes them on a
// later loop turn; its base policy outlives them (exchanges hold their key's state).

#include <memory>
#include <string>
#include <vector>

#include "origin/config.h"
#include "common/daemon/daemon.h"
#include "common/daemon/settings.h"
#include "common/http/client.h"
#include "common/obs/log.h"
#include "common/store/version_store.h"
#include "origin/base_policy.h"
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

  // The base policy (proto/PROTOCOL.md §6) of this worker's cache keys. Exchanges pass the
  // loop's time (loop().now_ms()).
  BasePolicy& base_policy() { return base_policy_; }

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
  BasePolicy base_policy_;  // Before links_: outlives them.
  std::vector<std::unique_ptr<EdgeLink>> links_;
  bool draining_ = false;
};

}  // namespace coilgun::origin
