#pragma once
// One tunnel connection from an edge and the exchanges on it (origin side). It passes each
// stream's events to its Exchange (exchange.h).
//
// Ownership: its worker (AgentWorker, worker.h) owns it, from the accept until it closes, and
// deletes it on a later loop turn. It owns its exchanges; one that is finished is deleted on a
// later turn too (it may be inside its own callback). Threads: its worker's loop.

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>

#include "common/tls/tls.h"
#include "common/tunnel/connection.h"
#include "origin/handshake_gate.h"

namespace coilgun::origin {

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

}  // namespace coilgun::origin
