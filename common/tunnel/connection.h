#pragma once
// One tunnel connection on a loop: a TCP socket, TLS over it (common/tls/tls.h), and a tunnel
// Session over TLS (common/tunnel/session.h). It moves bytes between the three and runs the
// session's ping timer; the edge and the agent supply the stream logic (a Session::Handler)
// and hear about the connection's life through Connection::Owner.
//
// Lifetime: owned by its Owner. After on_closed() the connection does nothing more; the owner
// destroys it, from a later loop turn if it is inside one of the connection's callbacks
// (Loop::defer_delete). One loop, one thread.

#include <cstdint>
#include <memory>
#include <string>

#include "common/net/loop.h"
#include "common/tls/tls.h"
#include "common/tunnel/session.h"

namespace coilgun::tunnel {

class Connection : public uv::TcpStream::Handler, public uv::Deferred {
 public:
  class Owner {
   public:
    virtual ~Owner() = default;
    // TLS is up (peer authenticated, ALPN agreed): streams may be opened.
    virtual void on_ready(Connection& c) { (void)c; }
    // The connection is over (its streams too; no handler call follows). Called once.
    virtual void on_closed(Connection& c, Status why) = 0;
    // Bytes crossed the socket (TLS included): for link-byte counters that move while
    // streams are open.
    virtual void on_link_bytes(uint64_t in, uint64_t out) { (void)in, (void)out; }
  };

  // Takes a connected socket and a TLS session for it. The session's events go to
  // |streams|; both |streams| and |owner| must outlive the connection. Nothing is read or
  // written, and the owner hears nothing, before the next loop turn: the owner has stored the
  // connection by then, whatever happens first.
  Connection(uv::Loop& loop, std::unique_ptr<uv::TcpStream> socket,
             std::unique_ptr<tls::TlsSession> tls, const SessionOptions& options,
             Session::Handler& streams, Owner& owner, std::chrono::milliseconds handshake_timeout);
  ~Connection() override;

  Session& session() { return *session_; }
  bool ready() const { return ready_; }
  bool closed() const { return closed_; }
  // Sends whatever the session produced. Call after submitting frames outside a callback of
  // this connection (inside one, it happens on return).
  void flush();
  // Drains: GOAWAY now, close once no stream is open (or at once with |now|).
  void drain(bool now = false);
  // Closes at once; the owner hears on_closed(why).
  void close(Status why);

  std::string peer_address() const { return peer_address_; }
  std::string peer_subject() const;
  uint64_t bytes_in() const;
  uint64_t bytes_out() const;

 private:
  // uv::TcpStream::Handler
  void on_read(std::span<const uint8_t> data) override;
  void on_eof() override;
  void on_error(Status status) override;
  void on_drained() override;

  void arm_ping_timer();
  void report_bytes();
  // Session output -> TLS -> socket, whatever the state.
  void write_out();

  uv::Loop& loop_;
  std::unique_ptr<uv::TcpStream> socket_;
  std::unique_ptr<tls::TlsSession> tls_;
  std::unique_ptr<Session> session_;
  Owner& owner_;
  const bool client_;  // The edge's side.
  uv::Timer timer_;
  std::string peer_address_;
  std::vector<uint8_t> cipher_;  // Scratch for bytes to send.
  uint64_t reported_in_ = 0, reported_out_ = 0;
  bool ready_ = false;
  bool closed_ = false;
  bool draining_ = false;
  bool in_callback_ = false;
};

}  // namespace coilgun::tunnel
