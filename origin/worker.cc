#include "origin/worker.h"

#include <algorithm>

#include "common/obs/log.h"

namespace coilgun::origin {

// ---- AgentWorker --------------------------------------------------------------------------

AgentWorker::AgentWorker(uv::Loop& loop, Shared& shared, unsigned index)
    : loop_(loop),
      shared_(shared),
      index_(index),
      refused_(shared.metrics.errors.with({"tunnel_handshake_limit"})),
      listener_(loop),
      backend_(
          loop, shared.now()->config.backend.host, shared.now()->config.backend.port,
          shared.now()->config.backend_pool.max_idle_per_worker,
          shared.now()->config.backend_pool.connect_timeout,
          http::Parser::Limits{.max_header_bytes = shared.now()->config.limits.max_header_bytes,
                               .max_headers = shared.now()->config.limits.max_headers}),
      backend_https_(shared.now()->config.backend.https) {
  apply_backend_tls();
}

void AgentWorker::apply_backend_tls() {
  // The pool dials the backend of the start (backend is restart-only): a reload that names an
  // https:// one instead must not turn TLS on towards the old http:// port.
  const auto settings = shared_.now();
  if (backend_https_ && settings->web_tls != nullptr) {
    backend_.set_tls(settings->web_tls, settings->config.backend_tls.name);
  }
}

proto::DeltaEncoder& AgentWorker::encoder(const config::DeltaConfig& delta) {
  // Rebuilt only for what it is made of: exchanges from before and after a reload that
  // changed other [delta] keys share it.
  if (encoder_ == nullptr || encoder_config_.effort != delta.effort ||
      encoder_config_.full_level != delta.full_level) {
    encoder_ = std::make_unique<proto::DeltaEncoder>(proto::EncodeOptions{
        .full_level = delta.full_level, .effort = delta.effort, .matcher = std::nullopt});
    encoder_config_ = delta;
  }
  return *encoder_;
}

AgentWorker::~AgentWorker() { stop(); }

Result<uint16_t> AgentWorker::start(uint16_t port_override) {
  const config::HostPort l = shared_.now()->config.listen;
  const uint16_t port = port_override != 0 ? port_override : l.port;
  COILGUN_TRY(daemon::logged_listen(
      listener_.listen(
          l.host, port, [this](std::unique_ptr<uv::TcpStream> s) { on_accept(std::move(s)); },
          daemon::worker_sharing(port_override)),
      "tunnel", l.host, port));
  log::info("listening",
            {{"role", "tunnel"}, {"address", listener_.address()}, {"worker", index_}});
  if (index_ == 0 && !shared_.now()->config.backend_health.path.empty()) {
    health_ = std::make_unique<BackendHealth>(loop_, shared_);
  }
  return listener_.port();
}

void AgentWorker::on_accept(std::unique_ptr<uv::TcpStream> socket) {
  if (draining_) return;
  // New tunnels use the certificates and limits of the moment (a reload changes them).
  const auto settings = shared_.now();
  const config::OriginTunnelConfig& t = settings->config.tunnel;
  const std::string source = socket->peer_ip();
  HandshakeGate::Refusal why = HandshakeGate::Refusal::kNone;
  HandshakeGate::Slot pending = shared_.handshakes.try_enter(t.max_pending_handshakes, source,
                                                             t.max_pending_per_source, &why);
  // Full: the oldest connection of this worker still in its handshake gives way. Silent
  // connections then last only until newer ones come, and a real edge's handshake, done in
  // milliseconds, gets through a flood of them (issue #10: an edge locked out for 38 s).
  if (!pending && why == HandshakeGate::Refusal::kFull && give_way(t.max_pending_handshakes)) {
    pending = shared_.handshakes.try_enter(t.max_pending_handshakes, source,
                                           t.max_pending_per_source, &why);
  }
  if (!pending) return refuse(socket->peer_address(), t.max_pending_handshakes);
  auto tls = tls::TlsSession::server(settings->tls);
  if (!tls.ok()) {
    log::error("cannot start TLS", {{"error", tls.status().to_string()}});
    return;
  }
  links_.push_back(std::make_unique<EdgeLink>(*this, std::move(socket), std::move(tls.value()),
                                              std::move(pending)));
}

bool AgentWorker::give_way(uint32_t limit) {
  for (auto& link : links_) {  // In the order they were accepted.
    if (!link->pending()) continue;
    refuse(link->peer_address(), limit);
    link->give_way();
    return true;
  }
  return false;
}

void AgentWorker::refuse(const std::string& peer, uint32_t limit) {
  refused_.inc();
  const uint64_t refused = shared_.handshakes.refused(loop_.now_ms());
  if (refused == 0) return;
  log::warn("tunnel refused: too many connections in the TLS handshake",
            {{"peer", peer}, {"max_pending_handshakes", limit}, {"refused", refused}});
}

void AgentWorker::link_closed(EdgeLink* link) {
  auto it =
      std::find_if(links_.begin(), links_.end(), [link](const auto& p) { return p.get() == link; });
  if (it == links_.end()) return;
  std::unique_ptr<EdgeLink> gone = std::move(*it);
  links_.erase(it);
  loop_.defer_delete(std::move(gone));
}

void AgentWorker::drain() {
  draining_ = true;
  listener_.close();
  health_.reset();
  std::vector<EdgeLink*> all;
  for (auto& l : links_) all.push_back(l.get());
  for (EdgeLink* l : all) l->drain();
}

void AgentWorker::stop() {
  draining_ = true;
  listener_.close();
  health_.reset();
  std::vector<EdgeLink*> all;
  for (auto& l : links_) all.push_back(l.get());
  for (EdgeLink* l : all) l->close(Status(Code::kClosed, "agent stopping"));
}

}  // namespace coilgun::origin
