#include "edge/agent_pool.h"

#include <xxhash.h>

#include <algorithm>

#include "common/obs/log.h"
#include "edge/client_exchange.h"
#include "edge/worker.h"

namespace coilgun::edge {
namespace {

using proto::HeaderField;

}  // namespace

// ---- TunnelLink ---------------------------------------------------------------------------

TunnelLink::TunnelLink(AgentPool& pool, std::unique_ptr<uv::TcpStream> socket,
                       std::unique_ptr<tls::TlsSession> tls)
    : pool_(pool) {
  const auto settings = pool.worker().shared().now();
  const config::EdgeConfig& c = settings->config;
  conn_ = std::make_unique<tunnel::Connection>(pool.worker().loop(), std::move(socket),
                                               std::move(tls), daemon::session_options(c, true),
                                               *this, *this, c.tunnel.connect_timeout);
}

TunnelLink::~TunnelLink() = default;

ClientExchange* TunnelLink::find(uint32_t stream) {
  auto it = exchanges_.find(stream);
  return it == exchanges_.end() ? nullptr : it->second;
}

void TunnelLink::on_response(uint32_t stream, uint16_t status, proto::BodyMode mode,
                             std::span<const HeaderField> fields, bool end_stream) {
  if (ClientExchange* ex = find(stream)) ex->on_response(status, mode, fields, end_stream);
}

void TunnelLink::on_data(uint32_t stream, std::span<const uint8_t> data, bool end_stream) {
  if (ClientExchange* ex = find(stream)) ex->on_data(data, end_stream);
}

void TunnelLink::on_trailers(uint32_t stream, std::span<const HeaderField> fields) {
  if (ClientExchange* ex = find(stream)) ex->on_trailers(fields);
}

void TunnelLink::on_stream_reset(uint32_t stream, proto::ResetReason reason) {
  ClientExchange* ex = find(stream);
  exchanges_.erase(stream);
  if (ex != nullptr) ex->on_reset(reason);
}

void TunnelLink::on_send_window(uint32_t stream) {
  if (stream != 0) {
    if (ClientExchange* ex = find(stream)) ex->on_window();
    return;
  }
  std::vector<ClientExchange*> all;
  for (auto& [id, ex] : exchanges_) all.push_back(ex);
  for (ClientExchange* ex : all) ex->on_window();
}

void TunnelLink::on_rtt(uint64_t ms) { pool_.directory().rtt(pool_.agent(), ms); }

void TunnelLink::on_goaway(uint32_t, proto::GoawayCode) {
  peer_drained_ = true;
  log::info("agent draining this tunnel", {{"agent", pool_.agent()}});
}

void TunnelLink::on_ready(tunnel::Connection& c) {
  ready_ = true;
  (void)c;
  pool_.link_ready(this);
}

void TunnelLink::on_closed(tunnel::Connection&, Status why) {
  std::vector<ClientExchange*> all;
  for (auto& [id, ex] : exchanges_) all.push_back(ex);
  exchanges_.clear();
  for (ClientExchange* ex : all) ex->on_tunnel_lost();
  pool_.link_closed(this, why);
}

void TunnelLink::on_link_bytes(uint64_t in, uint64_t out) {
  pool_.worker().shared().metrics.link_bytes(in, out);
}

// ---- AgentPool ----------------------------------------------------------------------------

AgentPool::AgentPool(EdgeWorker& worker, config::HostPort address, std::string name,
                     uint32_t standing)
    : worker_(worker),
      address_(std::move(address)),
      name_(std::move(name)),
      agent_(address_.to_string()),
      seed_(XXH3_64bits(agent_.data(), agent_.size())),
      slots_(std::max<uint32_t>(1, standing)),
      standing_(standing),
      last_used_ms_(worker.loop().now_ms()),
      dormant_(standing == 0) {
  for (Slot& s : slots_) s.retry = std::make_unique<uv::Timer>(worker_.loop());
  directory().known(agent_);
  if (dormant_) return;
  counted_standing_ = true;  // /ready waits for the tunnels made at start.
  worker_.standing_changed(1);
  for (size_t i = 0; i < slots_.size(); ++i) connect(i, false);
}

AgentPool::~AgentPool() { stop(); }

void AgentPool::connect(size_t i, bool urgent) {
  Slot& slot = slots_[i];
  if (stopping_ || dormant_ || slot.holds_place || slot.link) return;
  if (slot.queued && !urgent) return;  // In line already.
  // A connect a request waits for goes before those that only keep tunnels up: an urgent one
  // is queued again at the front, and whichever entry runs first dials (dial()).
  slot.queued = true;
  slot.retry->stop();
  worker_.queue_connect([this, i] { dial(i); }, urgent);
}

void AgentPool::release_place(Slot& slot) {
  if (!slot.holds_place) return;
  slot.holds_place = false;
  worker_.connect_done();
}

void AgentPool::dial(size_t i) {
  Slot& slot = slots_[i];
  if (!slot.queued) return worker_.connect_done();  // The slot's other entry dialled it.
  slot.queued = false;
  slot.holds_place = true;
  if (stopping_ || dormant_) return release_place(slot);
  slot.connector = std::make_unique<uv::TcpConnector>(worker_.loop());
  slot.connector->connect(
      address_.host, address_.port, worker_.shared().now()->config.tunnel.connect_timeout,
      [this, i](Result<std::unique_ptr<uv::TcpStream>> r) {
        Slot& s = slots_[i];
        std::unique_ptr<uv::TcpConnector> done = std::move(s.connector);  // Freed on return.
        if (!r.ok()) {
          // At warn (issue #14): an agent down or on the wrong port is otherwise visible only as
          // 502s. Once per attempt, so at most once per backoff step.
          log::warn("cannot reach agent", {{"agent", agent()}, {"error", r.status().to_string()}});
          directory().failed(agent_, r.status().to_string());
          return connect_failed(i);
        }
        // New connections use the certificates of the moment (a reload changes them).
        auto tls = tls::TlsSession::client(worker_.shared().now()->tls, name_);
        if (!tls.ok()) {
          log::error("cannot start TLS", {{"error", tls.status().to_string()}});
          return connect_failed(i);
        }
        s.link = std::make_unique<TunnelLink>(*this, std::move(r.value()), std::move(tls.value()));
      });
}

void AgentPool::schedule(size_t i) {
  if (stopping_ || dormant_) return;
  Slot& slot = slots_[i];
  const auto settings = worker_.shared().now();
  const auto& t = settings->config.tunnel;
  slot.backoff =
      slot.backoff.count() == 0 ? t.backoff_min : std::min(slot.backoff * 2, t.backoff_max);
  // Jittered: somewhere in the upper half of the backoff, so edges do not reconnect in step.
  const auto half = slot.backoff.count() / 2;
  const auto delay =
      std::chrono::milliseconds(half + static_cast<long>(worker_.rng()() % (half + 1)));
  slot.retry->start(delay, [this, i] { connect(i, false); });
}

void AgentPool::connect_failed(size_t i) {
  release_place(slots_[i]);
  if (dormant_) return;  // The idle close cut a handshake short.
  ++failures_;
  schedule(i);
  wake_waiters(false);
}

void AgentPool::wake_waiters(bool up) {
  std::vector<ClientExchange*> waiting;
  waiting.swap(waiters_);
  for (ClientExchange* ex : waiting) {
    if (up) {
      ex->on_tunnel_ready();
    } else {
      ex->on_tunnel_failed();
    }
  }
}

void AgentPool::link_ready(TunnelLink* link) {
  for (Slot& s : slots_) {
    if (s.link.get() != link) continue;
    s.backoff = std::chrono::milliseconds(0);
    release_place(s);
  }
  failures_ = 0;
  worker_.tunnel_up();
  if (standing_ > 0 && !counted_standing_) {
    counted_standing_ = true;
    worker_.standing_changed(1);
  }
  log::info("tunnel up", {{"agent", agent()}});
  directory().tunnel_up(agent_);
  wake_waiters(true);
}

void AgentPool::link_closed(TunnelLink* link, const Status& why) {
  for (size_t i = 0; i < slots_.size(); ++i) {
    Slot& s = slots_[i];
    if (s.link.get() != link) continue;
    const bool was_ready = link->was_ready();
    worker_.loop().defer_delete(std::move(s.link));
    if (!was_ready) {
      log::warn("tunnel failed", {{"agent", agent()}, {"reason", why.to_string()}});
      // A handshake this edge cut (idle close, drain, stop) says nothing about the agent.
      if (!dormant_ && !stopping_) directory().failed(agent_, why.to_string());
      return connect_failed(i);
    }
    worker_.tunnel_down();
    if (dormant_) {
      log::debug("tunnel closed: agent idle", {{"agent", agent()}});
      directory().tunnel_down(agent_, "");
      return;
    }
    // A close the agent announced (GOAWAY: it drains) or this edge made is no loss. Requests a
    // drop cut are counted as tunnel_lost by their exchanges, not here (issue #14).
    if (stopping_ || link->peer_drained()) {
      log::info("tunnel closed", {{"agent", agent()}, {"reason", why.to_string()}});
      directory().tunnel_down(agent_, "");
    } else {
      log::warn("tunnel down", {{"agent", agent()}, {"reason", why.to_string()}});
      directory().tunnel_down(agent_, why.to_string());
    }
    schedule(i);
    return;
  }
}

AgentDirectory& AgentPool::directory() { return worker_.shared().agents; }

uint64_t AgentPool::weight(std::string_view key) const {
  return XXH3_64bits_withSeed(key.data(), key.size(), seed_);
}

TunnelLink* AgentPool::pick() {
  TunnelLink* best = nullptr;
  for (Slot& s : slots_) {
    if (s.link && s.link->ready() && (best == nullptr || s.link->load() < best->load())) {
      best = s.link.get();
    }
  }
  if (best != nullptr) last_used_ms_ = worker_.loop().now_ms();
  return best;
}

bool AgentPool::up() {
  return std::any_of(slots_.begin(), slots_.end(),
                     [](const Slot& s) { return s.link && s.link->ready(); });
}

bool AgentPool::available() {
  if (stopping_) return false;
  if (dormant_ || up()) return true;
  // A tunnel is coming: a slot in line, dialling, in its handshake or waiting to retry (which
  // a waiting request dials at once). Not a slot whose link is draining (GOAWAY), nor after a
  // failed connect: those requests go elsewhere at once.
  return failures_ == 0 && std::any_of(slots_.begin(), slots_.end(),
                                       [](const Slot& s) { return !s.link || s.holds_place; });
}

void AgentPool::want(bool urgent) {
  last_used_ms_ = worker_.loop().now_ms();
  if (stopping_) return;
  if (dormant_) {
    set_dormant(false);
  } else if (!urgent) {
    return;
  }
  // A pool without a standing share makes one tunnel; a slot still draining from the idle
  // close reconnects when it is gone (link_closed).
  for (size_t i = 0; i < std::max<uint32_t>(1, standing_); ++i) connect(i, urgent);
}

void AgentPool::wait(ClientExchange* ex) {
  waiters_.push_back(ex);  // First: a connect that fails at once wakes it.
  want(true);
}

void AgentPool::forget(ClientExchange* ex) { std::erase(waiters_, ex); }

void AgentPool::close_if_idle(std::chrono::milliseconds idle) {
  if (idle.count() == 0 || dormant_ || stopping_ || !waiters_.empty()) return;
  if (worker_.loop().now_ms() - last_used_ms_ < static_cast<uint64_t>(idle.count())) return;
  for (const Slot& s : slots_) {
    if (s.link && s.link->load() > 0) return;
  }
  set_dormant(true);
  log::debug("closing tunnels: agent idle", {{"agent", agent()}});
  for (Slot& s : slots_) {
    // A drain below may run other pools' connects, whose failures may send a request here
    // and wake this pool again: then it keeps what it has.
    if (!dormant_) return;
    s.retry->stop();
    s.connector.reset();
    s.backoff = std::chrono::milliseconds(0);
    if (!s.link) release_place(s);
    if (s.link) s.link->drain();  // May close it at once (link_closed).
  }
}

void AgentPool::set_dormant(bool dormant) {
  if (dormant == dormant_) return;
  dormant_ = dormant;
  failures_ = 0;
  // Woken, it counts as standing again only once a tunnel is up (link_ready): /ready stays
  // 200 while traffic comes back to an idle-closed agent.
  if (dormant && counted_standing_) {
    counted_standing_ = false;
    worker_.standing_changed(-1);
  }
}

void AgentPool::drain() {
  stopping_ = true;
  for (Slot& s : slots_) {
    s.retry->stop();
    s.connector.reset();
    if (!s.link) release_place(s);
    if (s.link) s.link->drain();
  }
  wake_waiters(false);
}

void AgentPool::stop() {
  stopping_ = true;
  waiters_.clear();  // Their exchanges end with the worker.
  for (Slot& s : slots_) {
    s.retry->stop();
    s.connector.reset();
    if (s.link) s.link->close(Status(Code::kClosed, "edge stopping"));
  }
}

bool AgentPool::idle() const {
  for (const Slot& s : slots_) {
    if (s.link) return false;
  }
  return true;
}

}  // namespace coilgun::edge
