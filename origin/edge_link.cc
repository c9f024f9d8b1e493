#include "origin/edge_link.h"

#include <vector>

#include "common/obs/log.h"
#include "origin/exchange.h"
#include "origin/worker.h"

namespace coilgun::origin {
namespace {

using proto::HeaderField;
using proto::ResetReason;

}  // namespace

// ---- EdgeLink -----------------------------------------------------------------------------

EdgeLink::EdgeLink(AgentWorker& worker, std::unique_ptr<uv::TcpStream> socket,
                   std::unique_ptr<tls::TlsSession> tls, HandshakeGate::Slot pending)
    : worker_(worker), pending_(std::move(pending)) {
  const auto settings = worker.shared().now();
  const config::OriginConfig& c = settings->config;
  conn_ = std::make_unique<tunnel::Connection>(worker.loop(), std::move(socket), std::move(tls),
                                               daemon::session_options(c, false), *this, *this,
                                               c.tunnel.handshake_timeout);
}

EdgeLink::~EdgeLink() = default;

void EdgeLink::on_ready(tunnel::Connection& c) {
  ready_ = true;
  pending_.release();
  worker_.shared().metrics.tunnels.add(1);
  log::info("tunnel up", {{"peer", c.peer_address()}, {"edge", c.peer_subject()}});
}

void EdgeLink::give_way() {
  gave_way_ = true;  // Counted as tunnel_handshake_limit by the worker, not as a failed handshake.
  conn_->close(Status(Code::kRefused, "gave way to a newer connection (max_pending_handshakes)",
                      Side::kTunnel));
}

void EdgeLink::on_closed(tunnel::Connection& c, Status why) {
  pending_.release();
  if (ready_) {
    worker_.shared().metrics.tunnels.sub(1);
    log::info("tunnel down", {{"peer", c.peer_address()}, {"reason", why.to_string()}});
  } else if (!gave_way_) {  // Given way: counted and logged by the worker (refuse()).

    // Refused before a single frame: an edge we could not authenticate, or a stray client.
    // Anyone can cause this at will: counted each time, logged at most once a second.
    worker_.shared().metrics.errors.with({"tunnel_handshake"}).inc();
    if (const uint64_t n = worker_.shared().handshake_failures.occurred(worker_.loop().now_ms())) {
      log::warn("tunnel refused",
                {{"peer", c.peer_address()}, {"reason", why.to_string()}, {"count", n}});
    }
  }
  std::vector<uint32_t> open;
  for (auto& [id, ex] : exchanges_) open.push_back(id);
  for (uint32_t id : open) {
    auto it = exchanges_.find(id);
    if (it != exchanges_.end()) it->second->cancel("tunnel_lost");
  }
  worker_.link_closed(this);
}

void EdgeLink::on_link_bytes(uint64_t in, uint64_t out) {
  worker_.shared().metrics.link_bytes(in, out);
}

void EdgeLink::on_request(uint32_t stream, std::span<const tunnel::VersionId> held,
                          std::span<const HeaderField> fields, bool end_stream) {
  auto ex = std::make_unique<Exchange>(*this, stream, held, fields, end_stream);
  Exchange* raw = ex.get();
  exchanges_[stream] = std::move(ex);
  raw->start();
}

void EdgeLink::on_data(uint32_t stream, std::span<const uint8_t> data, bool end_stream) {
  auto it = exchanges_.find(stream);
  if (it != exchanges_.end()) it->second->on_request_data(data, end_stream);
}

void EdgeLink::on_stream_reset(uint32_t stream, ResetReason) {
  auto it = exchanges_.find(stream);
  if (it != exchanges_.end()) it->second->cancel("client_gone");
}

void EdgeLink::on_send_window(uint32_t stream) {
  if (stream != 0) {
    auto it = exchanges_.find(stream);
    if (it != exchanges_.end()) it->second->on_send_window();
    return;
  }
  std::vector<uint32_t> ids;
  for (auto& [id, ex] : exchanges_) ids.push_back(id);
  for (uint32_t id : ids) {
    auto it = exchanges_.find(id);
    if (it != exchanges_.end()) it->second->on_send_window();
  }
}

void EdgeLink::finished(uint32_t stream) {
  auto it = exchanges_.find(stream);
  if (it == exchanges_.end()) return;
  std::unique_ptr<Exchange> ex = std::move(it->second);
  exchanges_.erase(it);
  worker_.loop().defer_delete(std::move(ex));  // Maybe inside its own callback.
}

}  // namespace coilgun::origin
