#pragma once
// coilgun-edge's logic: serves clients over HTTP/1.1 and carries their requests to origin
// agents over tunnels.
//
// Per worker (EdgeWorker, one per loop thread): the client listener, the exchanges of its
// clients (ClientExchange, client_exchange.h), and per agent a pool of tunnel connections
// (AgentPool, agent_pool.h). Shared: what all workers share, made by main() and outliving them.
//
// Ownership: a worker owns its pools for its life (one per distinct agent address and name).
// It creates an exchange per request and hands it to the client connection
// (ServerConnection::set_exchange), which owns it and hands it to the loop to delete on a later
// turn once the exchange is over there; the worker only counts the exchanges not yet finished
// (exchange_done()), for drained().

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <unordered_map>

#include "common/daemon/daemon.h"
#include "common/daemon/settings.h"
#include "common/http/client.h"
#include "common/http/server.h"
#include "common/obs/log.h"
#include "common/store/version_store.h"
#include "edge/agent_directory.h"
#include "edge/agent_pool.h"
#include "edge/config.h"
#include "proto/delta.h"

namespace coilgun::edge {

using Settings = daemon::Settings<config::EdgeConfig>;

// What every worker shares. Settings are replaced whole on SIGHUP: take a snapshot (now())
// when starting a piece of work and keep it for that work.
struct Shared {
  daemon::Reloadable<Settings>& settings;
  VersionStore& store;
  daemon::Metrics& metrics;
  unsigned workers = 1;  // Worker threads (tunnel.connections is spread over them).
  // Workers that can serve: with a tunnel up, or keeping none by design (every agent's pool is
  // dormant: no share of tunnel.connections, or idle-closed; a request then waits for one
  // handshake). The edge is ready (/ready) when all of them are, since a client's connection
  // may land on any worker.
  std::atomic<unsigned> workers_ready{0};
  // Each agent's tunnels, RTT and last error, for the admin's /stats.
  AgentDirectory agents;
  std::shared_ptr<const Settings> now() const { return settings.get(); }
};

class ClientExchange;

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
  // The pool for |agent| as |route| names it (one per distinct agent address and name).
  AgentPool* pool_for(const config::EdgeRoute& route, const config::HostPort& agent);
  // The agent of |route| that cache key |key| goes to: of its agents available (a tunnel up,
  // or dormant, or connecting and not failed: AgentPool::available()) other than |avoid|, the
  // one with the highest AgentPool::weight() for the key. So a key stays with one agent while
  // that agent is up, and only the keys of an agent that goes down move (to the next by
  // weight). nullptr when none is available.
  AgentPool* pick_pool(const config::EdgeRoute& route, std::string_view key,
                       const AgentPool* avoid = nullptr);
  // The keep-alive connections to a route's fallback URL (DirectFetch), made on first use.
  http::ClientPool& direct_pool(const config::BackendUrl& url,
                                const std::shared_ptr<const tls::TlsContext>& web_tls);
  // A tunnel of this worker came up / went down (AgentPool).
  void tunnel_up();
  void tunnel_down();
  // A pool began (+1) or stopped (-1) counting as one that keeps standing tunnels: at start,
  // or once a tunnel is up after it woke; until it goes dormant.
  void standing_changed(int delta);
  // Runs |dial| once this worker has fewer than its share of tunnel.max_pending_handshakes
  // connects in flight (at once if it has): first in line if |urgent| (a request waits for
  // it), else last. Each |dial| that ran must be followed by one connect_done() when its
  // handshake ended, whatever the outcome.
  void queue_connect(std::function<void()> dial, bool urgent);
  void connect_done();
  // Opens tunnels to every agent |settings| routes to, once per snapshot: at start and after
  // a reload, before a request needs them.
  void connect_routes(const std::shared_ptr<const Settings>& settings);
  // An exchange finished (ClientExchange::finish): it no longer keeps drained() false.
  void exchange_done();

  // http::Server (ServerHandler). The events of each exchange go to its ClientExchange.
  void on_request(http::ServerConnection& c) override;
  void on_connection_refused() override;

 private:
  Shared& shared_;
  unsigned index_;
  std::unordered_map<std::string, std::unique_ptr<AgentPool>> pools_;
  std::unordered_map<std::string, std::unique_ptr<http::ClientPool>> direct_pools_;
  // The snapshot connect_routes() last ran for (held, so that a new one never reuses its address).
  std::shared_ptr<const Settings> routes_of_;
  // Counts Shared::workers_ready in or out as this worker can serve or not.
  void update_ready();
  // Every pool closes its tunnels if its agent was idle for tunnel.idle_close.
  void sweep_idle();
  // Starts queued connects while there is room.
  void next_connects();

  unsigned tunnels_up_ = 0;
  int standing_pools_ = 0;
  bool counted_ready_ = false;
  uv::Timer idle_sweep_;
  std::deque<std::function<void()>> connect_queue_;
  unsigned connecting_ = 0;     // Connects started and not done.
  bool starting_next_ = false;  // Inside next_connects() (a dial may end at once).
  proto::DeltaDecoder decoder_;
  std::mt19937 rng_;
  size_t exchanges_ = 0;
  bool draining_ = false;
  log::ReportLimiter refused_log_;  // The connection-limit warning: at most once a second.
};

}  // namespace coilgun::edge
