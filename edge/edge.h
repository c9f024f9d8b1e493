#pragma once
// coilgun-edge's logic: serves clients over HTTP/1.1 and carries their requests to origin
// agents over tunnels.
//
// Per worker: the client listener, and per agent a pool of tunnel connections (config
// tunnel.connections, default 2) that reconnect with capped, jittered backoff. A request is
// routed by its host (an absolute-form target's authority, else the Host field; an HTTP/1.0
// request without Host takes the default route) to its agent and sent on the least busy
// tunnel with the ids of the versions this edge holds for its cache key. A coded response is
// rebuilt from the delta, checked against its version id, stored as the newest version and
// served; a base the edge no longer holds, or a body that fails its check, is fetched again in
// full, never served. Streamed responses go to the client as they arrive, and the tunnel
// window is granted back only as the client socket takes them. A response without Date gets
// one (RFC 9110 §6.6.1). Interim responses (103 Early Hints) are passed to HTTP/1.1 clients.
// An upgrade request (WebSocket) is sent with ":upgrade" on a stream left open; after the
// agent's 101 the stream is a byte pipe between the client's socket and the backend's, paced
// by the tunnel's windows both ways (PROTOCOL.md §2, REQUEST).
//
// Failures and their answers: no route for the Host 421; no tunnel up 502 at once (reason
// "tunnel_down"); tunnel lost mid-request 502 ("tunnel_lost"); backend refused 502
// ("backend_failed"); backend or exchange too slow 504.

#include <atomic>
#include <memory>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/daemon/config.h"
#include "common/daemon/daemon.h"
#include "common/daemon/settings.h"
#include "common/http/server.h"
#include "common/obs/log.h"
#include "common/tls/tls.h"
#include "common/tunnel/connection.h"
#include "common/store/version_store.h"
#include "proto/delta.h"

namespace coilgun::edge {

using Settings = daemon::Settings<config::EdgeConfig>;

// What every worker shares. Settings are replaced whole on SIGHUP: take a snapshot (now())
// when starting a piece of work and keep it for that work.
struct Shared {
  daemon::Reloadable<Settings>& settings;
  VersionStore& store;
  daemon::Metrics& metrics;
  // Workers with at least one tunnel up: the edge is ready (/ready) when all of them are, since
  // a client's connection may land on any worker.
  std::atomic<unsigned> workers_with_tunnel{0};
  std::shared_ptr<const Settings> now() const { return settings.get(); }
};

class EdgeWorker;
class AgentPool;
class ClientExchange;

// One tunnel connection to an agent, and the exchanges using it.
class TunnelLink : public tunnel::Session::Handler, public tunnel::Connection::Owner {
 public:
  TunnelLink(AgentPool& pool, std::unique_ptr<uv::TcpStream> socket,
             std::unique_ptr<tls::TlsSession> tls);
  ~TunnelLink() override;

  bool ready() const { return ready_ && !conn_->closed() && !conn_->session().draining(); }
  // TLS came up on this connection at some point (it counted as a tunnel).
  bool was_ready() const { return ready_; }
  tunnel::Session& session() { return conn_->session(); }
  void flush() { conn_->flush(); }
  void close(Status why) { conn_->close(why); }
  void drain() { conn_->drain(); }
  size_t load() const { return exchanges_.size(); }
  void attach(uint32_t stream, ClientExchange* ex) { exchanges_[stream] = ex; }
  void detach(uint32_t stream) { exchanges_.erase(stream); }

  // tunnel::Session::Handler
  void on_response(uint32_t stream, uint16_t status, proto::BodyMode mode,
                   std::span<const proto::HeaderField> fields, bool end_stream) override;
  void on_data(uint32_t stream, std::span<const uint8_t> data, bool end_stream) override;
  void on_trailers(uint32_t stream, std::span<const proto::HeaderField> fields) override;
  void on_stream_reset(uint32_t stream, proto::ResetReason reason) override;
  void on_send_window(uint32_t stream) override;
  void on_goaway(uint32_t last_stream, proto::GoawayCode code) override;

  // tunnel::Connection::Owner
  void on_ready(tunnel::Connection& c) override;
  void on_closed(tunnel::Connection& c, Status why) override;
  void on_link_bytes(uint64_t in, uint64_t out) override;

 private:
  ClientExchange* find(uint32_t stream);

  AgentPool& pool_;
  std::unique_ptr<tunnel::Connection> conn_;
  std::unordered_map<uint32_t, ClientExchange*> exchanges_;
  bool ready_ = false;
};

// The tunnels to one agent: keeps |connections| of them up, reconnecting with backoff.
class AgentPool {
 public:
  AgentPool(EdgeWorker& worker, const config::EdgeRoute& route);
  ~AgentPool();

  // The ready tunnel with the fewest streams, or nullptr when none is up.
  TunnelLink* pick();
  void drain();
  void stop();
  bool idle() const;
  EdgeWorker& worker() { return worker_; }
  const config::EdgeRoute& route() const { return route_; }
  std::string agent() const { return route_.agent.to_string(); }

  // From TunnelLink.
  void link_ready(TunnelLink* link);
  void link_closed(TunnelLink* link, const Status& why);

 private:
  struct Slot {
    std::unique_ptr<uv::TcpConnector> connector;
    std::unique_ptr<TunnelLink> link;
    std::unique_ptr<uv::Timer> retry;
    std::chrono::milliseconds backoff{0};
  };
  void connect(size_t i);
  void schedule(size_t i);

  EdgeWorker& worker_;
  const config::EdgeRoute route_;  // A copy: the pool outlives the settings it was made from.
  std::vector<Slot> slots_;
  bool stopping_ = false;
};

class EdgeWorker : public daemon::Worker, public http::Server {
 public:
  EdgeWorker(uv::Loop& loop, Shared& shared, unsigned index);
  ~EdgeWorker() override;

  Result<uint16_t> start(uint16_t port_override) override;
  void drain() override;
  bool drained() const override;
  void stop() override;
  void reloaded() override;

  Shared& shared() { return shared_; }
  uv::Loop& loop() { return loop_; }
  proto::DeltaDecoder& decoder() { return decoder_; }
  std::mt19937& rng() { return rng_; }
  // The pool for a route's agent (one per distinct agent address).
  AgentPool* pool_for(const config::EdgeRoute& route);
  // A tunnel of this worker came up / went down (AgentPool).
  void tunnel_up();
  void tunnel_down();
  // Opens tunnels to every agent |settings| routes to, once per snapshot: at start and after
  // a reload, before a request needs them.
  void connect_routes(const std::shared_ptr<const Settings>& settings);
  void exchange_done(ClientExchange* ex);

  // http::Server (ServerHandler)
  void on_request(http::ServerConnection& c) override;
  void on_request_body(http::ServerConnection& c, std::span<const uint8_t> data) override;
  void on_request_end(http::ServerConnection& c) override;
  void on_abort(http::ServerConnection& c) override;
  void on_upgraded_data(http::ServerConnection& c, std::span<const uint8_t> data) override;
  void on_upgraded_end(http::ServerConnection& c) override;
  void on_writable(http::ServerConnection& c) override;
  void on_connection_refused() override;

 private:
  Shared& shared_;
  unsigned index_;
  std::unordered_map<std::string, std::unique_ptr<AgentPool>> pools_;
  // The snapshot connect_routes() last ran for (held, so that a new one never reuses its address).
  std::shared_ptr<const Settings> routes_of_;
  unsigned tunnels_up_ = 0;
  proto::DeltaDecoder decoder_;
  std::mt19937 rng_;
  size_t exchanges_ = 0;
  bool draining_ = false;
  log::ReportLimiter refused_log_;  // The connection-limit warning: at most once a second.
};

}  // namespace coilgun::edge
