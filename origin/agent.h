#pragma once
// coilgun-origin's logic: accepts tunnels from edges and serves their streams from the
// backend web server.
//
// For each stream (one HTTP exchange) the agent forwards the request to the backend over a
// keep-alive pool, asking for identity encoding, then answers in one of two ways:
//   coded   the body is buffered (up to delta.max_body) and sent as one delta payload
//           (proto/delta.h): a delta against the newest version the edge said it holds and
//           this agent holds under the same cache key, or the full body in zstd. GET
//           responses with textual, identity-encoded bodies.
//   stream  everything else, and any body that outgrows the limit: the bytes go through as
//           they arrive, paced by the tunnel's flow control (the backend socket is not read
//           while the edge cannot take more), so nothing large is ever held whole.
// Backend failures become stream resets the edge turns into 502 (refused, broken) or 504
// (too slow).

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/daemon/config.h"
#include "common/daemon/daemon.h"
#include "common/daemon/settings.h"
#include "common/http/client.h"
#include "common/tls/tls.h"
#include "common/tunnel/connection.h"
#include "common/store/version_store.h"
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

class AgentWorker;
class Exchange;

// One tunnel connection from an edge and the exchanges on it.
class EdgeLink : public tunnel::Session::Handler, public tunnel::Connection::Owner {
 public:
  // |pending| is the connection's place among those in the handshake: held until the link is
  // ready or closed.
  EdgeLink(AgentWorker& worker, std::unique_ptr<uv::TcpStream> socket,
           std::unique_ptr<tls::TlsSession> tls, HandshakeGate::Slot pending);
  ~EdgeLink() override;

  tunnel::Session& session() { return conn_->session(); }
  void flush() { conn_->flush(); }
  void drain() { conn_->drain(); }
  void close(Status why) { conn_->close(why); }
  AgentWorker& worker() { return worker_; }
  // Still in the TLS handshake, and open.
  bool pending() const { return !ready_ && !conn_->closed(); }
  std::string peer_address() const { return conn_->peer_address(); }
  // Closes it to make room for a newer connection (max_pending_handshakes reached).
  void give_way();
  // An exchange is over: forget it (deleted on a later turn).
  void finished(uint32_t stream);

  // tunnel::Session::Handler
  void on_request(uint32_t stream, std::span<const tunnel::VersionId> held,
                  std::span<const proto::HeaderField> fields, bool end_stream) override;
  void on_data(uint32_t stream, std::span<const uint8_t> data, bool end_stream) override;
  void on_stream_reset(uint32_t stream, proto::ResetReason reason) override;
  void on_send_window(uint32_t stream) override;

  // tunnel::Connection::Owner
  void on_ready(tunnel::Connection& c) override;
  void on_closed(tunnel::Connection& c, Status why) override;
  void on_link_bytes(uint64_t in, uint64_t out) override;

 private:
  AgentWorker& worker_;
  HandshakeGate::Slot pending_;
  std::unique_ptr<tunnel::Connection> conn_;
  std::unordered_map<uint32_t, std::unique_ptr<Exchange>> exchanges_;
  bool ready_ = false;
  bool gave_way_ = false;
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
