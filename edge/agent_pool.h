#pragma once
// The edge's tunnels to one origin agent. An AgentPool keeps this worker's share of
// tunnel.connections up (the process keeps that many per agent, spread over its workers),
// reconnecting with capped, jittered backoff; a request goes on the least busy one. A pool
// whose share is none, or whose agent no request used for tunnel.idle_close, is dormant: it
// holds no tunnel, and the next request wakes it and waits for one handshake (wait()). A
// TunnelLink is one of those connections: it passes the events of each stream to the
// ClientExchange (client_exchange.h) attached to it.
//
// Ownership: a worker (EdgeWorker, worker.h) owns one pool per agent (address and name) for its
// life, and a pool owns its links; a closed link is deleted on a later loop turn. A link only
// points at its exchanges: an exchange detaches itself when it ends, and is told when the
// tunnel is lost.
// Threads: everything here belongs to its worker's loop.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/tls/tls.h"
#include "common/tunnel/connection.h"
#include "edge/agent_directory.h"
#include "edge/config.h"

namespace coilgun::edge {

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
  // The agent sent GOAWAY: it drains this tunnel, and its close is announced, not a loss.
  bool peer_drained() const { return peer_drained_; }
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
  void on_rtt(uint64_t ms) override;

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
  bool peer_drained_ = false;
};

// The tunnels to one agent: keeps |standing| of them up, reconnecting with backoff.
class AgentPool {
 public:
  // The agent at |address| whose certificate must carry |name|; this worker keeps |standing|
  // tunnels to it (0: dormant until a request comes).
  AgentPool(EdgeWorker& worker, config::HostPort address, std::string name, uint32_t standing);
  ~AgentPool();

  // The ready tunnel with the fewest streams, or nullptr when none is up. Counts as a use of
  // the agent (tunnel.idle_close).
  TunnelLink* pick();
  bool up();
  // A request may go to (or wait for) this agent: a tunnel is up, or it is dormant, or its
  // tunnels are being made and none has failed yet. After a failed connect, not until one is
  // up: requests then go elsewhere at once instead of waiting on backoffs.
  bool available();
  // |ex| waits for a tunnel (waking the pool if dormant): it hears on_tunnel_ready() once one
  // is up, or on_tunnel_failed() if a connect fails first. forget() withdraws it.
  void wait(ClientExchange* ex);
  void forget(ClientExchange* ex);
  // Makes the pool connect now if it is dormant; with |urgent| (a request waits for it) its
  // connects also go to the front of the worker's queue.
  void want(bool urgent);
  // Closes this pool's tunnels (drained: open streams finish) if no request used the agent for
  // |idle| and nothing waits; the pool is dormant after. No-op with |idle| 0.
  void close_if_idle(std::chrono::milliseconds idle);
  // This agent's weight for cache key |key| (rendezvous hashing: among a route's agents that
  // are up, the one with the highest weight takes the key).
  uint64_t weight(std::string_view key) const;
  void drain();
  void stop();
  bool idle() const;
  EdgeWorker& worker() { return worker_; }
  const std::string& agent() const { return agent_; }
  // The edge's record of every agent (Shared::agents).
  AgentDirectory& directory();

  // From TunnelLink.
  void link_ready(TunnelLink* link);
  void link_closed(TunnelLink* link, const Status& why);

 private:
  struct Slot {
    std::unique_ptr<uv::TcpConnector> connector;
    std::unique_ptr<TunnelLink> link;
    std::unique_ptr<uv::Timer> retry;
    std::chrono::milliseconds backoff{0};
    bool queued = false;       // Waiting for a place among the worker's handshakes.
    bool holds_place = false;  // Holds one, until its tunnel is up or the connect failed.
  };
  // Queues slot |i|'s connect for a place among the worker's handshakes
  // (EdgeWorker::queue_connect); dial() makes it once there is one.
  void connect(size_t i, bool urgent);
  void dial(size_t i);
  void release_place(Slot& slot);
  void schedule(size_t i);
  // A connect of slot |i| failed (before a tunnel was up): backoff, and the waiters move on.
  void connect_failed(size_t i);
  void set_dormant(bool dormant);
  // Tells every waiter that a tunnel is up (|up|) or that the connect failed.
  void wake_waiters(bool up);

  EdgeWorker& worker_;
  const config::HostPort address_;
  const std::string name_;   // What the agent's certificate must carry.
  const std::string agent_;  // address_ as text, for logs.
  const uint64_t seed_;      // Of weight(): a hash of agent_.
  std::vector<Slot> slots_;
  std::vector<ClientExchange*> waiters_;
  const uint32_t standing_;    // Tunnels kept up while not dormant (this worker's share).
  uint32_t failures_ = 0;      // Connects failed since a tunnel was last up (or the pool woke).
  uint64_t last_used_ms_ = 0;  // Loop time of the last pick() or wait().
  bool dormant_ = false;
  bool counted_standing_ = false;  // In the worker's standing count (EdgeWorker::standing_changed).
  bool stopping_ = false;
};

}  // namespace coilgun::edge
