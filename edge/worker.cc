#include "edge/worker.h"

#include "edge/client_exchange.h"

namespace coilgun::edge {

// ---- EdgeWorker ---------------------------------------------------------------------------

namespace {

// Idle keep-alive connections a worker keeps to one fallback URL.
constexpr size_t kDirectIdle = 32;

http::ServerOptions server_options(const config::EdgeConfig& c) {
  http::ServerOptions o;
  o.limits.max_header_bytes = c.limits.max_header_bytes;
  o.limits.max_headers = c.limits.max_headers;
  o.idle_timeout = c.limits.client_idle_timeout;
  o.header_timeout = c.limits.client_header_timeout;
  o.body_timeout = c.limits.client_body_timeout;
  o.max_connections = c.limits.max_client_connections;
  o.server_name = "coilgun-edge";
  return o;
}
}  // namespace

EdgeWorker::EdgeWorker(uv::Loop& loop, Shared& shared, unsigned index)
    : http::Server(loop, server_options(shared.now()->config)),
      shared_(shared),
      index_(index),
      idle_sweep_(loop),
      rng_(std::random_device{}()) {}

EdgeWorker::~EdgeWorker() {
  stop();
  pools_.clear();
}

Result<uint16_t> EdgeWorker::start(uint16_t port_override) {
  const auto settings = shared_.now();
  const config::HostPort& l = settings->config.listen;
  const uint16_t wanted = port_override != 0 ? port_override : l.port;
  COILGUN_TRY(daemon::logged_listen(listen(l.host, wanted, daemon::worker_sharing(port_override)),
                                    "http", l.host, wanted));
  connect_routes(settings);  // Tunnels come up now, before the first request needs one.
  update_ready();
  sweep_idle();
  log::info("listening", {{"role", "http"}, {"address", address()}, {"worker", index_}});
  return port();
}

void EdgeWorker::connect_routes(const std::shared_ptr<const Settings>& settings) {
  if (routes_of_ == settings) return;
  routes_of_ = settings;
  const config::EdgeConfig& c = settings->config;
  const auto connect = [this](const config::EdgeRoute& r) {
    for (const config::HostPort& a : r.agents) pool_for(r, a);
  };
  if (c.default_route) connect(*c.default_route);
  for (const config::EdgeRoute& r : c.routes) connect(r);
}

AgentPool* EdgeWorker::pool_for(const config::EdgeRoute& route, const config::HostPort& agent) {
  const std::string& name = route.name_for(agent);
  const std::string key = agent.to_string() + '|' + name;
  auto it = pools_.find(key);
  if (it != pools_.end()) return it->second.get();
  // This worker's share of the process's tunnel.connections to the agent; the remainder goes
  // to workers picked by the agent's address, so that one worker does not hold them all.
  const uint32_t connections = shared_.now()->config.tunnel.connections;
  const unsigned workers = std::max(1u, shared_.workers);
  const size_t spread = std::hash<std::string>{}(key) % workers;
  const uint32_t share = connections / workers +
                         ((index_ + workers - spread) % workers < connections % workers ? 1 : 0);
  auto pool = std::make_unique<AgentPool>(*this, agent, name, share);
  AgentPool* raw = pool.get();
  pools_[key] = std::move(pool);
  return raw;
}

AgentPool* EdgeWorker::pick_pool(const config::EdgeRoute& route, std::string_view key,
                                 const AgentPool* avoid) {
  AgentPool* best = nullptr;
  uint64_t best_weight = 0;
  for (const config::HostPort& a : route.agents) {
    AgentPool* p = pool_for(route, a);
    if (p == avoid || !p->available()) continue;
    const uint64_t w = route.agents.size() == 1 ? 0 : p->weight(key);
    if (best == nullptr || w > best_weight) {
      best = p;
      best_weight = w;
    }
  }
  return best;
}

http::ClientPool& EdgeWorker::direct_pool(const config::BackendUrl& url,
                                          const std::shared_ptr<const tls::TlsContext>& web_tls) {
  std::unique_ptr<http::ClientPool>& pool = direct_pools_[url.to_string()];
  if (!pool) {
    const config::EdgeConfig& c = shared_.now()->config;
    pool = std::make_unique<http::ClientPool>(
        loop_, url.host, url.port, kDirectIdle, c.tunnel.connect_timeout,
        http::Parser::Limits{.max_header_bytes = c.limits.max_header_bytes,
                             .max_headers = c.limits.max_headers});
  }
  // The caller's settings' context (a reload may have brought another CA).
  if (url.https) pool->set_tls(web_tls);
  return *pool;
}

void EdgeWorker::tunnel_up() {
  shared_.metrics.tunnels.add(1);
  ++tunnels_up_;
  update_ready();
}

void EdgeWorker::tunnel_down() {
  shared_.metrics.tunnels.sub(1);
  --tunnels_up_;
  update_ready();
}

void EdgeWorker::standing_changed(int delta) {
  standing_pools_ += delta;
  update_ready();
}

void EdgeWorker::update_ready() {
  const bool ready = tunnels_up_ > 0 || standing_pools_ == 0;
  if (ready == counted_ready_) return;
  counted_ready_ = ready;
  if (ready) {
    ++shared_.workers_ready;
  } else {
    --shared_.workers_ready;
  }
}

void EdgeWorker::queue_connect(std::function<void()> dial, bool urgent) {
  if (urgent) {
    connect_queue_.push_front(std::move(dial));
  } else {
    connect_queue_.push_back(std::move(dial));
  }
  next_connects();
}

void EdgeWorker::connect_done() {
  --connecting_;
  next_connects();
}

void EdgeWorker::next_connects() {
  if (starting_next_ || draining_) return;
  starting_next_ = true;
  const unsigned limit = std::max(
      1u, shared_.now()->config.tunnel.max_pending_handshakes / std::max(1u, shared_.workers));
  while (connecting_ < limit && !connect_queue_.empty()) {
    std::function<void()> dial = std::move(connect_queue_.front());
    connect_queue_.pop_front();
    ++connecting_;
    dial();
  }
  starting_next_ = false;
}

void EdgeWorker::sweep_idle() {
  const auto idle = shared_.now()->config.tunnel.idle_close;
  if (idle.count() > 0 && !draining_) {
    for (auto& [k, p] : pools_) p->close_if_idle(idle);
  }
  // A quarter of the idle time, so tunnels close at most a quarter late; checked again each
  // second while off (a reload may turn it on).
  const auto period = idle.count() > 0 ? std::clamp(idle / 4, std::chrono::milliseconds(25),
                                                    std::chrono::milliseconds(1000))
                                       : std::chrono::milliseconds(1000);
  idle_sweep_.start(period, [this] { sweep_idle(); });
}

void EdgeWorker::reloaded() {
  if (!draining_) connect_routes(shared_.now());
}

void EdgeWorker::on_request(http::ServerConnection& c) {
  if (draining_) {
    c.respond_simple(503, "draining\n", true);
    return;
  }
  // The connection owns the exchange (and deletes it after the exchange is over there); it is
  // set before begin(), which may answer at once.
  ClientExchange& ex = c.set_exchange(std::make_unique<ClientExchange>(*this, c));
  ++exchanges_;
  ex.begin();
}

void EdgeWorker::on_connection_refused() {
  shared_.metrics.errors.with({"client_connection_limit"}).inc();
  if (const uint64_t n = refused_log_.occurred(loop_.now_ms())) {
    log::warn("client connection refused: limits.max_client_connections reached",
              {{"worker", index_},
               {"max_client_connections", shared_.now()->config.limits.max_client_connections},
               {"refused", n}});
  }
}

void EdgeWorker::exchange_done() { --exchanges_; }

void EdgeWorker::drain() {
  draining_ = true;
  stop_accepting();
  for (auto& [k, p] : pools_) p->drain();
}

bool EdgeWorker::drained() const {
  if (exchanges_ > 0) return false;
  for (const auto& [k, p] : pools_) {
    if (!p->idle()) return false;
  }
  return true;
}

void EdgeWorker::stop() {
  draining_ = true;
  idle_sweep_.stop();
  connect_queue_.clear();
  stop_accepting();
  close_all();
  for (auto& [k, p] : pools_) p->stop();
}

}  // namespace coilgun::edge
