#include "common/tunnel/connection.h"

namespace coilgun::tunnel {
namespace {
constexpr size_t kPlainChunk = 64 * 1024;
// Decrypted bytes, handed to the session at once: one buffer per thread (a worker is one loop),
// not 64 KiB per connection (issue #13). No connection's read runs inside another's.
std::span<uint8_t> plain_scratch() {
  thread_local std::vector<uint8_t> plain(kPlainChunk);
  return plain;
}
// DATA handed to the socket ahead of what it has written: enough to keep a fast link busy
// between two loop turns, little enough that a control frame made now goes out soon on a slow
// one (issue #10: PING answers 20 s late behind bulk at 100 KB/s). The kernel's unsent bytes are
// bounded the same way (TCP_NOTSENT_LOWAT).
constexpr size_t kSendAhead = 64 * 1024;
}  // namespace

Connection::Connection(uv::Loop& loop, std::unique_ptr<uv::TcpStream> socket,
                       std::unique_ptr<tls::TlsSession> tls, const SessionOptions& options,
                       Session::Handler& streams, Owner& owner,
                       std::chrono::milliseconds handshake_timeout)
    : loop_(loop),
      socket_(std::move(socket)),
      tls_(std::move(tls)),
      session_(std::make_unique<Session>(options, streams, loop.now_ms())),
      owner_(owner),
      client_(options.client),
      timer_(loop) {
  peer_address_ = socket_->peer_address();
  socket_->set_handler(this);
  socket_->set_nodelay(true);
  socket_->set_notsent_lowat(kSendAhead);
  timer_.start(std::chrono::milliseconds(0), [this, handshake_timeout] {
    if (closed_) return;
    timer_.start(handshake_timeout, [this] {
      if (!ready_) close(Status(Code::kTimeout, "TLS handshake timed out", Side::kTunnel, true));
    });
    const Status s = socket_->start_read();
    if (!s.ok()) return close(s);
    flush();  // The ClientHello, and this side's SETTINGS (held until the handshake is done).
  });
}

Connection::~Connection() = default;

std::string Connection::peer_subject() const { return tls_->peer_subject(); }
uint64_t Connection::bytes_in() const { return socket_->bytes_read(); }
uint64_t Connection::bytes_out() const { return socket_->bytes_written(); }

void Connection::on_read(std::span<const uint8_t> data) {
  if (closed_) return;
  // Counted before anything is delivered: whoever has a response in hand sees its bytes in
  // coilgun_link_bytes_total (tests and coilgun-replay read it right after a response).
  report_bytes();
  in_callback_ = true;
  Status s = tls_->feed(data);
  const std::span<uint8_t> plain = plain_scratch();
  while (s.ok() && !closed_) {
    auto n = tls_->read(plain);
    if (!n.ok()) {
      s = n.status();
      break;
    }
    if (*n == 0) break;
    if (!ready_ && !client_ && tls_->handshake_done()) {
      // The first plaintext can arrive in the same read as the end of the handshake: the
      // agent's owner hears of the connection before its first request.
      ready_ = true;
      owner_.on_ready(*this);
      if (closed_) break;
    }
    s = session_->receive(plain.first(*n), loop_.now_ms());
  }
  // The edge's TLS 1.3 handshake ends before the agent has checked the edge's certificate: the
  // connection is up only once the agent's SETTINGS came (issue #10: a refused edge took every
  // handshake for a tunnel up, and retried at once).
  if (s.ok() && !ready_ && !closed_ && tls_->handshake_done() &&
      (!client_ || session_->settings_received())) {
    ready_ = true;
    owner_.on_ready(*this);
  }
  in_callback_ = false;
  flush();  // Replies (handshake records, SETTINGS ACK, WINDOW_UPDATE, a GOAWAY) go out.
  if (!s.ok()) {
    close(s);
    return;
  }
  if (closed_) return;
  arm_ping_timer();
  if (draining_ && session_->open_streams() == 0) {
    close(Status(Code::kClosed, "tunnel drained", Side::kTunnel));
  }
}

void Connection::flush() {
  if (closed_ || in_callback_) return;
  write_out();
  arm_ping_timer();  // The session's next deadline may have moved (expect_answer()).
}

void Connection::write_out() {
  std::vector<uint8_t> plain;
  const size_t ahead = socket_->write_queue_bytes() + tls_->pending_output_bytes();
  session_->take_output(plain, ahead >= kSendAhead ? 0 : kSendAhead - ahead);
  if (!plain.empty()) {
    const Status s = tls_->write(plain);
    if (!s.ok()) {
      close(s);  // No-op when already closing.
      return;
    }
  }
  cipher_.clear();
  tls_->take_output(cipher_);
  if (!cipher_.empty()) {
    const Status s = socket_->write(std::move(cipher_));
    cipher_ = {};
    if (!s.ok()) return;  // on_error closes.
  }
  // Idle (no stream open, nothing left to send): the TLS buffers go back until the next frame.
  if (ready_ && session_->open_streams() == 0 && session_->output_bytes() == 0) {
    tls_->release_buffers();
  }
  report_bytes();
}

void Connection::arm_ping_timer() {
  if (!ready_ || closed_) return;
  const uint64_t next = session_->next_timeout_ms();
  if (next == UINT64_MAX) {
    timer_.stop();
    return;
  }
  const uint64_t now = loop_.now_ms();
  timer_.start(std::chrono::milliseconds(next > now ? next - now : 0), [this] {
    // The peer's TCP acknowledging our bytes: the link carries them, even while the peer has
    // nothing to send (the sender of bulk on a slow link).
    const uint64_t now_ms = loop_.now_ms();
    if (const auto since = socket_->ms_since_ack(); since && *since <= now_ms) {
      session_->written(now_ms - *since);
    }
    const Status s = session_->on_timeout(now_ms);
    flush();
    if (!s.ok()) {
      close(s);
      return;
    }
    arm_ping_timer();
  });
}

void Connection::drain(bool now) {
  if (closed_) return;
  draining_ = true;
  session_->goaway(GoawayCode::kShutdown, "draining");
  flush();
  if (now || session_->open_streams() == 0) {
    close(Status(Code::kClosed, "tunnel drained", Side::kTunnel));
  }
}

void Connection::close(Status why) {
  if (closed_) return;
  closed_ = true;  // First: a failed write below re-enters close() through on_error.
  // Whatever the session queued last (a GOAWAY saying why) goes out before the FIN.
  write_out();
  timer_.stop();
  (void)tls_->close();
  cipher_.clear();
  tls_->take_output(cipher_);
  if (!cipher_.empty()) (void)socket_->write(std::move(cipher_));
  socket_->stop_read();
  socket_->shutdown();
  report_bytes();
  owner_.on_closed(*this, why);
}

void Connection::on_eof() {
  close(Status(Code::kClosed, "tunnel closed by peer", Side::kTunnel, true));
}

void Connection::on_error(Status status) { close(status.from(Side::kTunnel)); }

// The socket wrote what it had: more DATA may go.
void Connection::on_drained() {
  report_bytes();
  if (!closed_ && !in_callback_ && session_->output_bytes() > 0) write_out();
}

void Connection::report_bytes() {
  const uint64_t in = socket_->bytes_read(), out = socket_->bytes_written();
  if (in == reported_in_ && out == reported_out_) return;
  owner_.on_link_bytes(in - reported_in_, out - reported_out_);
  reported_in_ = in;
  reported_out_ = out;
}

}  // namespace coilgun::tunnel
