#include "common/http/client.h"

#include <algorithm>

#include "common/http/writer.h"

namespace coilgun::http {
namespace {

// TLS between a client connection and its socket: the session's bytes through the stream's
// filter seam (uv::StreamFilter).
class TlsFilter final : public uv::StreamFilter {
 public:
  explicit TlsFilter(std::unique_ptr<tls::TlsSession> session) : session_(std::move(session)) {}

  Status feed(std::span<const uint8_t> read, std::vector<uint8_t>& plain,
              std::vector<uint8_t>& wire) override {
    Status s = session_->feed(read);
    while (s.ok()) {
      uint8_t buf[16 * 1024];
      const Result<size_t> n = session_->read(buf);
      if (!n.ok()) {
        s = n.status();
      } else if (*n == 0) {
        break;
      } else {
        plain.insert(plain.end(), buf, buf + *n);
      }
    }
    session_->take_output(wire);
    // The server's close_notify ends the stream as a FIN would: what came before it was read.
    if (!s.ok() && s.code() == Code::kClosed) return Status::Ok();
    return s.from(Side::kUpstream);
  }
  Status send(std::span<const uint8_t> plain, std::vector<uint8_t>& wire) override {
    const Status s = session_->write(plain);
    session_->take_output(wire);
    return s.from(Side::kUpstream);
  }
  void close(std::vector<uint8_t>& wire) override {
    (void)session_->close();
    session_->take_output(wire);
  }
  size_t held() const override { return session_->pending_output_bytes(); }
  bool peer_closed() const override { return session_->peer_closed(); }
  std::string error_detail() const override { return session_->error_detail(); }

 private:
  std::unique_ptr<tls::TlsSession> session_;
};

}  // namespace
}  // namespace coilgun::http

namespace coilgun::http {

namespace {

// RFC 9110 §6.4.1: "A server MUST NOT send a Content-Length header field in any response with
// a status code of 1xx (Informational) or 204 (No Content)". A 204 that announces a body anyway
// may send it: whatever follows is not to be trusted as the next answer.
bool announces_forbidden_body(const ResponseHead& head) {
  if (head.status != 204) return false;
  if (find(head.headers, "transfer-encoding")) return true;
  const auto cl = find(head.headers, "content-length");
  return cl && *cl != "0";
}

}  // namespace

ClientConnection::ClientConnection(std::unique_ptr<uv::TcpStream> socket, Parser::Limits limits)
    : Connection(std::move(socket), Parser::Mode::kResponse, limits) {}

ClientConnection::~ClientConnection() = default;

void ClientConnection::on_response_head(ResponseHead&& head) {
  if (head.is_interim()) {
    interim_ = true;
    if (handler_ != nullptr) handler_->on_interim(std::move(head));
    return;
  }
  if (head.status == 101) {
    if (!upgrade_answers(upgrade_asked_, find(head.headers, "upgrade").value_or(""))) {
      unasked_101_ = true;  // feed_responses() fails the exchange; the handler never sees it.
      return;
    }
    // The pipe starts now: what the handler sends from inside this call is the new protocol's.
    state_ = State::kUpgraded;
    keep_alive_ = false;
  }
  if (announces_forbidden_body(head)) close_after_ = true;
  if (handler_ != nullptr) handler_->on_response_head(std::move(head));
}

void ClientConnection::on_body(std::span<const uint8_t> data) {
  if (handler_ != nullptr) handler_->on_response_body(data);
}

void ClientConnection::on_message_complete() {
  if (!interim_) complete_ = true;
}

bool ClientConnection::carries_ignorable_body(std::string_view method, BodyFraming framing,
                                              uint64_t length) {
  const bool body =
      framing == BodyFraming::kChunked || (framing == BodyFraming::kContentLength && length > 0);
  return body && method != "POST" && method != "PUT" && method != "PATCH";
}

bool ClientConnection::reusable() const {
  return state_ == State::kDone && keep_alive_ && request_complete_ && !close_after_ && !failed_ &&
         !reading_paused() && socket_->reading();
}

Status ClientConnection::send_request(RequestHead head, BodyFraming framing, uint64_t length,
                                      ClientHandler* handler) {
  if (failed_) return Status(Code::kClosed, "backend connection failed", Side::kUpstream, true);
  if (state_ == State::kExchange) {
    return Status(Code::kInternal, "backend connection busy", Side::kInternal);
  }
  if (parser_->paused()) parser_->resume();  // After the previous response.
  state_ = State::kExchange;
  handler_ = nullptr;  // Set once the request is written: a failure before is only returned.
  response_bytes_ = 0;
  interim_ = false;
  complete_ = false;
  request_framing_ = framing;
  safe_request_ = is_safe_method(head.method) && framing == BodyFraming::kNone;
  upgrade_asked_ = std::string(find(head.headers, "upgrade").value_or(""));
  remove(head.headers, "Content-Length");
  remove(head.headers, "Transfer-Encoding");
  if (framing == BodyFraming::kContentLength) {
    set(head.headers, "Content-Length", std::to_string(length));
  } else if (framing == BodyFraming::kChunked) {
    set(head.headers, "Transfer-Encoding", "chunked");
  }
  if (carries_ignorable_body(head.method, framing, length)) {
    close_after_ = true;
    set(head.headers, "Connection", "close");
  }
  request_complete_ =
      framing == BodyFraming::kNone || (framing == BodyFraming::kContentLength && length == 0);
  std::vector<uint8_t> out;
  COILGUN_TRY(write_request_head(head, out));
  parser_->set_request_was_head(head.method == "HEAD");
  COILGUN_TRY(socket_->write(std::move(out)));
  COILGUN_TRY(socket_->start_read());
  handler_ = handler;
  return Status::Ok();
}

// A failed socket write needs nothing more here: TcpStream::write() reports it through
// on_error() -> fail() -> the handler's on_error before it returns the error.
void ClientConnection::send_body(std::span<const uint8_t> data) {
  if (failed_ || data.empty()) return;
  std::vector<uint8_t> out;
  if (request_framing_ == BodyFraming::kChunked) {
    write_chunk(data, out);
  } else {
    out.assign(data.begin(), data.end());
  }
  if (!socket_->write(std::move(out)).ok()) return;  // Reported (see above).
}

void ClientConnection::send_end() {
  if (failed_) return;
  if (state_ == State::kUpgraded) return socket_->shutdown();
  request_complete_ = true;
  if (request_framing_ != BodyFraming::kChunked) return;
  std::vector<uint8_t> out;
  if (!write_last_chunk({}, out).ok()) return fail(Status(Code::kInternal, "last chunk"));
  if (!socket_->write(std::move(out)).ok()) return;  // Reported (see send_body).
}

void ClientConnection::pause_reading() {
  // Only a response body, or what follows a 101, is paced.
  if (state_ != State::kExchange && state_ != State::kUpgraded) return;
  pause_socket();
}

void ClientConnection::resume_reading() {
  if (!unpause_socket()) return;
  if (!failed_) {
    if (const Status s = socket_->start_read(); !s.ok()) return fail(s.from(Side::kUpstream));
  }
  feed_responses();
}

void ClientConnection::detach() {
  handler_ = nullptr;
  failed_ = true;  // Mid-exchange: what is still to come belongs to nobody.
}

void ClientConnection::on_read(std::span<const uint8_t> data) {
  if (failed_) return;
  if (state_ == State::kUpgraded) {
    buffer(data);
    return pass_upgraded();
  }
  if (state_ != State::kExchange) {  // Nothing may arrive between exchanges.
    fail(Status(Code::kProtocol, "backend sent bytes between exchanges", Side::kUpstream));
    return;
  }
  response_bytes_ += data.size();
  buffer(data);
  feed_responses();
}

void ClientConnection::feed_responses() {
  if (state_ == State::kUpgraded) return pass_upgraded();
  while (!pending_.empty() && !failed_ && !reading_paused() && state_ == State::kExchange) {
    auto r = feed_pending();
    if (!r.ok()) {
      fail(r.status().from(Side::kUpstream));
      return;
    }
    if (unasked_101_) {
      return fail(Status(Code::kProtocol,
                         "backend switched to a protocol the request did not ask for",
                         Side::kUpstream));
    }
    if (parser_->paused()) {
      if (interim_) {
        interim_ = false;
        parser_->resume();
        continue;
      }
      if (parser_->upgraded()) return pass_upgraded();  // What is left is the new protocol's.
      return finish_response();
    }
    if (*r == 0) return;
  }
}

// After a 101: bytes go to the handler as they are; the backend's FIN ends the exchange.
void ClientConnection::pass_upgraded() {
  std::vector<uint8_t> data;
  while (!failed_ && handler_ != nullptr && take_pending(data)) handler_->on_response_body(data);
  if (failed_ || reading_paused() || !eof_ || !pending_.empty()) return;
  state_ = State::kDone;  // keep_alive_ is false after a 101: never reused.
  socket_->stop_read();
  ClientHandler* h = handler_;
  handler_ = nullptr;
  if (h != nullptr) h->on_response_end();
}

// The final response is complete (the parser stays paused until the next request).
void ClientConnection::finish_response() {
  state_ = State::kDone;
  keep_alive_ = parser_->keep_alive();
  // Anything after the response was never asked for: a second answer, a body the status
  // forbids. The connection goes away after this exchange.
  if (!pending_.empty()) close_after_ = true;
  pending_.clear();
  // Back-pressure was for the body, which is over. Reading on, a stray byte or the backend's
  // close shows at once (on_read, on_eof) while the connection waits to be reused.
  (void)unpause_socket();
  // A socket that cannot be watched while idle is not reused (reusable() checks reading()).
  if (!close_after_ && !failed_ && !socket_->start_read().ok()) close_after_ = true;
  ClientHandler* h = handler_;
  handler_ = nullptr;
  if (h != nullptr) h->on_response_end();  // May hand this connection back to the pool.
}

void ClientConnection::on_eof() {
  if (failed_) return;
  if (state_ == State::kUpgraded) {
    eof_ = true;
    return pass_upgraded();
  }
  if (state_ != State::kExchange) {  // Closed between exchanges: never reused.
    failed_ = true;
    socket_->stop_read();
    if (idle_ && pool_ != nullptr) pool_->drop_idle(this);
    return;
  }
  if (!complete_ && !socket_->eof_clean()) {  // A body cut short by a forged FIN, perhaps.
    return fail(Status(Code::kClosed, "backend's TLS stream ended without close_notify",
                       Side::kUpstream, true));
  }
  const Status s = parser_->finish();  // Ends a close-delimited body.
  if (!s.ok()) return fail(s.from(Side::kUpstream));
  if (complete_) return finish_response();
  fail(Status(Code::kClosed, "backend closed the connection", Side::kUpstream, true));
}

void ClientConnection::on_error(Status status) { fail(status.from(Side::kUpstream)); }

void ClientConnection::on_drained() {
  if (handler_ != nullptr) handler_->on_writable();
}

void ClientConnection::fail(Status status) {
  if (failed_) return;
  failed_ = true;
  socket_->stop_read();
  if (idle_) {
    if (pool_ != nullptr) pool_->drop_idle(this);
    return;
  }
  ClientHandler* h = handler_;
  handler_ = nullptr;
  if (h != nullptr) h->on_error(status);
}

// ---- ClientPool ---------------------------------------------------------------------------

ClientPool::ClientPool(uv::Loop& loop, std::string host, uint16_t port, size_t max_idle,
                       std::chrono::milliseconds connect_timeout, Parser::Limits limits)
    : loop_(loop),
      host_(std::move(host)),
      port_(port),
      max_idle_(max_idle),
      connect_timeout_(connect_timeout),
      limits_(limits) {}

ClientPool::~ClientPool() {
  for (auto& c : idle_) c->pool_ = nullptr;
}

void ClientPool::acquire(OnAcquire done, bool fresh) {
  while (!fresh && !idle_.empty()) {
    std::unique_ptr<ClientConnection> c = std::move(idle_.back());
    idle_.pop_back();
    c->idle_ = false;
    if (!c->reusable() || !c->socket_->quiet()) {  // Sent something, or closed, since.
      c->pool_ = nullptr;
      loop_.defer_delete(std::move(c));
      continue;
    }
    c->pool_ = nullptr;
    c->reused_ = true;
    done(std::move(c));
    return;
  }
  auto connector = std::make_unique<uv::TcpConnector>(loop_);
  uv::TcpConnector* raw = connector.get();
  connecting_.push_back(std::move(connector));
  raw->connect(
      host_, port_, connect_timeout_,
      [this, raw, done = std::move(done)](Result<std::unique_ptr<uv::TcpStream>> r) {
        // The connector is done with us: it may go (see TcpConnector::finish).
        auto it = std::find_if(connecting_.begin(), connecting_.end(),
                               [raw](const auto& p) { return p.get() == raw; });
        std::unique_ptr<uv::TcpConnector> keep;
        if (it != connecting_.end()) {
          keep = std::move(*it);
          connecting_.erase(it);
        }
        if (!r.ok()) {
          done(r.status().from(Side::kUpstream));
          return;
        }
        if (tls_ != nullptr) {
          auto session = tls::TlsSession::client(tls_, tls_name_.empty() ? host_ : tls_name_);
          if (!session.ok()) return done(session.status().from(Side::kUpstream));
          const Status s =
              r.value()->set_filter(std::make_unique<TlsFilter>(std::move(session).value()));
          if (!s.ok()) return done(s);
        }
        auto c = std::make_unique<ClientConnection>(std::move(r.value()), limits_);
        c->tls_generation_ = tls_generation_;
        done(std::move(c));
      });
}

void ClientPool::set_tls(std::shared_ptr<const tls::TlsContext> tls, std::string name) {
  if ((tls == tls_ && name == tls_name_) || tls == nullptr) return;
  tls_ = std::move(tls);
  tls_name_ = std::move(name);
  ++tls_generation_;
  for (auto& c : idle_) {
    c->pool_ = nullptr;
    loop_.defer_delete(std::move(c));
  }
  idle_.clear();
}

void ClientPool::release(std::unique_ptr<ClientConnection> c) {
  if (c == nullptr) return;
  if (c->reusable() && idle_.size() < max_idle_ && c->tls_generation_ == tls_generation_) {
    c->handler_ = nullptr;
    c->idle_ = true;
    c->pool_ = this;
    idle_.push_back(std::move(c));
    return;
  }
  loop_.defer_delete(std::move(c));
}

void ClientPool::drop_idle(ClientConnection* c) {
  auto it = std::find_if(idle_.begin(), idle_.end(), [c](const auto& p) { return p.get() == c; });
  if (it == idle_.end()) return;
  std::unique_ptr<ClientConnection> gone = std::move(*it);
  idle_.erase(it);
  loop_.defer_delete(std::move(gone));  // Inside its own callback: not now.
}

}  // namespace coilgun::http
