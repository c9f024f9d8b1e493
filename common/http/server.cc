#include "common/http/server.h"

#include <algorithm>
#include <chrono>

#include "common/http/writer.h"

namespace coilgun::http {
namespace {
// Pipelined bytes buffered while a response is in progress, before reading stops.
constexpr size_t kMaxPending = 256 * 1024;
}  // namespace

namespace {

// An HTTP/1.1 request without a body that lists "upgrade" in Connection and names protocols in
// Upgrade (RFC 9110 §7.8). HEAD (whose answer has no content to switch in) and CONNECT are not
// upgrades, nor is h2c: RFC 9113 §3.1 deprecates it, and a proxy that passed it would let the
// client speak HTTP/2 to the backend past the edge (h2c smuggling).
bool wants_upgrade(const RequestHead& r, BodyFraming framing) {
  const auto upgrade = find(r.headers, "upgrade");
  return r.version_minor == 1 && r.method != "HEAD" && r.method != "CONNECT" &&
         framing == BodyFraming::kNone && upgrade && !upgrade->empty() &&
         has_token(r.headers, "connection", "upgrade") && !has_token(r.headers, "upgrade", "h2c");
}

}  // namespace

ServerConnection::ServerConnection(uv::Loop& loop, std::unique_ptr<uv::TcpStream> socket,
                                   ServerHandler& handler, const ServerOptions& options)
    : Connection(std::move(socket), Parser::Mode::kRequest, options.limits),
      loop_(loop),
      handler_(handler),
      options_(options),
      idle_(loop) {
  if (!socket_->start_read().ok()) {
    // Reported on the next turn: the handler must not hear about a connection from inside
    // its own accept callback before it registered it.
    idle_.start(std::chrono::milliseconds(0), [this] { close(); });
    return;
  }
  arm_idle();
}

ServerConnection::~ServerConnection() = default;

void ServerConnection::on_request_head(RequestHead&& head) {
  request_ = std::move(head);
  in_exchange_ = true;
  request_done_ = false;
  response_started_ = false;
  response_done_ = false;
  head_request_ = request_.method == "HEAD";
  close_after_ = !request_.keep_alive();
  upgrade_requested_ = wants_upgrade(request_, parser_->framing());
  release_exchange();  // The previous exchange's, if it is still here.
  head_started_ = false;
  idle_.stop();
  if (parser_->framing() != BodyFraming::kNone) arm_body_deadline();
  handler_.on_request(*this);
}

void ServerConnection::on_body(std::span<const uint8_t> data) {
  if (!in_exchange_) return;
  if (exchange_) return exchange_->on_request_body(data);
  handler_.on_request_body(*this, data);
}

void ServerConnection::on_message_complete() {
  request_done_ = true;
  if (in_exchange_) idle_.stop();  // The body deadline.
  if (!in_exchange_) return;
  if (response_done_) {
    end_exchange();  // Answered before the request formally ended (no body).
  } else if (exchange_) {
    exchange_->on_request_end();
  } else {
    handler_.on_request_end(*this);
  }
}

const std::string& ServerConnection::peer_ip() {
  if (!peer_ip_) peer_ip_ = socket_->peer_ip();
  return *peer_ip_;
}

void ServerConnection::arm_idle() {
  head_started_ = false;
  idle_.start(options_.idle_timeout, [this] {
    if (!in_exchange_) close();
  });
}

// Set once, when a head's first byte comes: a client that dribbles it never moves it.
void ServerConnection::start_head_deadline() {
  head_started_ = true;
  idle_.start(options_.header_timeout, [this] {
    if (!in_exchange_) time_out();
  });
}

// Moved by every body byte; stopped while the handler paused reading (its own limits apply).
void ServerConnection::arm_body_deadline() {
  if (reading_paused()) return;
  idle_.start(options_.body_timeout, [this] {
    if (in_exchange_ && !request_done_ && !reading_paused()) time_out();
  });
}

// 408 (RFC 9110 §15.5.9) when no response has begun, and the connection closes.
void ServerConnection::time_out() {
  const bool started = in_exchange_ && response_started_;
  if (in_exchange_) abort_exchange();
  if (started) return close();
  respond_simple(408, "request timed out\n", true);
}

void ServerConnection::on_read(std::span<const uint8_t> data) {
  if (closed_ || closing_) return;
  buffer(data);
  if (!in_exchange_) {
    if (!head_started_) start_head_deadline();
  } else if (!request_done_ && !upgraded_) {
    arm_body_deadline();
  }
  process();
}

// Feeds received bytes to the parser. Parser callbacks may end an exchange (a handler that
// answers at once); the parser is only ever resumed here, after feed() returned, never from
// inside its own callbacks.
void ServerConnection::process() {
  if (closing_ || closed_) return;
  if (upgraded_) return pass_upgraded();
  while (!pending_.empty()) {
    if (in_exchange_ && request_done_) break;  // A response is being written: the next waits.
    if (reading_paused() && in_exchange_) break;
    if (parser_->paused()) {
      if (in_exchange_) break;
      parser_->resume();
    }
    in_feed_ = true;
    auto r = feed_pending();
    in_feed_ = false;
    if (closed_ || closing_) return;
    if (!r.ok()) {
      fail_request(r.status());
      return;
    }
    if (*r == 0 && !parser_->paused()) break;  // Needs more bytes.
  }
  // Stop reading while too much waits; resume when the exchange ends.
  if (pending_.size() > kMaxPending || reading_paused()) {
    socket_->stop_read();
  } else if (!eof_) {
    // A socket that cannot be read any more is a failed connection.
    if (const Status s = socket_->start_read(); !s.ok()) return on_error(s);
  }
  if (eof_ && !in_exchange_) close();
}

// After a 101: what the client sent goes to the handler as it is, then its FIN.
void ServerConnection::pass_upgraded() {
  std::vector<uint8_t> data;
  while (!closed_ && !closing_ && take_pending(data)) {
    if (exchange_) {
      exchange_->on_upgraded_data(data);
    } else {
      handler_.on_upgraded_data(*this, data);
    }
  }
  if (closed_ || closing_ || reading_paused()) return;
  if (!eof_) {
    if (const Status s = socket_->start_read(); !s.ok()) return on_error(s);
  } else if (!upgraded_end_) {
    upgraded_end_ = true;
    if (exchange_) {
      exchange_->on_upgraded_end();
    } else {
      handler_.on_upgraded_end(*this);
    }
  }
}

void ServerConnection::fail_request(const Status& s) {
  if (s.code() == Code::kClosed) {  // Bytes after a request that asked to close.
    pending_.clear();
    return;
  }
  const int status = error_status(s);
  if (in_exchange_) abort_exchange();
  if (!response_started_) {
    respond_simple(status, status_reason(status), true);
  } else {
    close();
  }
}

// A write that fails has been reported already: TcpStream::write() calls on_error() (which
// closes this connection and aborts the exchange) before it returns the error.
void ServerConnection::write(std::vector<uint8_t>&& bytes) {
  if (closed_ || closing_) return;
  if (!socket_->write(std::move(bytes)).ok()) return;
  if (!writable()) was_unwritable_ = true;
}

void ServerConnection::send_continue() {
  ResponseHead head;
  head.status = 100;
  send_interim(std::move(head));
}

void ServerConnection::send_interim(ResponseHead head) {
  if (closed_ || !in_exchange_ || !head.is_interim()) return;
  if (response_started_ || request_.version_minor == 0) return;
  remove_hop_by_hop(head.headers);
  head.version_minor = 1;
  std::vector<uint8_t> out;
  if (!write_response_head(head, out).ok()) return;  // Dropped (see the header).
  write(std::move(out));
}

namespace {

// The IMF-fixdate of now, formatted once per second per thread (one loop per thread).
std::string_view http_date() {
  thread_local DateCache dates;
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  return dates.get(std::chrono::duration_cast<std::chrono::seconds>(now).count());
}

}  // namespace

Status ServerConnection::respond_head(ResponseHead head, ResponseFraming framing, uint64_t length) {
  if (closed_ || !in_exchange_) return Status(Code::kClosed, "exchange is over");
  if (response_started_) return Status(Code::kInternal, "response head already written");
  const bool switching = head.status == 101;
  // Upgrade is hop-by-hop, but an answer to an upgrade request keeps it: it names the protocol
  // switched to, or the ones the server wants (a 426 must send it, RFC 9110 §15.5.22).
  std::optional<std::string> upgrade;
  if (upgrade_requested_) {
    if (auto u = find(head.headers, "upgrade"); u && !u->empty()) upgrade = std::string(*u);
  }
  if (switching && !(upgrade && upgrade_answers(*find(request_.headers, "upgrade"), *upgrade))) {
    return Status(Code::kMalformed, "a 101 must name a protocol the request asked for");
  }
  if (head.is_interim()) return Status(Code::kInternal, "interim status: use send_interim");
  remove_hop_by_hop(head.headers);
  head.version_minor = 1;
  // RFC 9110 §6.6.1: an origin server with a clock MUST send Date (in 2xx-4xx at least), and a
  // recipient that forwards a response without one MUST append one. Both apply here: answers
  // of the server's own and responses it forwards.
  if (!switching && !find(head.headers, "date")) {
    head.headers.push_back({"Date", std::string(http_date())});
  }
  if (switching) {
    framing = ResponseFraming::kNone;  // What follows is the new protocol's, unframed.
    close_after_ = true;
  }
  if (framing == ResponseFraming::kChunked && request_.version_minor == 0) {
    framing = ResponseFraming::kUntilClose;  // HTTP/1.0 clients do not speak chunked.
  }
  switch (framing) {
    case ResponseFraming::kNone:
      break;
    case ResponseFraming::kContentLength:
      set(head.headers, "Content-Length", std::to_string(length));
      break;
    case ResponseFraming::kChunked:
      remove(head.headers, "Content-Length");
      if (!head_request_) set(head.headers, "Transfer-Encoding", "chunked");
      break;
    case ResponseFraming::kUntilClose:
      remove(head.headers, "Content-Length");
      close_after_ = true;
      break;
  }
  std::string connection;
  if (upgrade) {
    set(head.headers, "Upgrade", *upgrade);
    connection = "upgrade";  // RFC 9110 §7.8: a sender of Upgrade lists it in Connection.
  }
  if (!switching && close_after_) {
    connection += connection.empty() ? "close" : ", close";
  } else if (!switching && request_.version_minor == 0) {
    connection = "keep-alive";
  }
  if (!connection.empty()) set(head.headers, "Connection", connection);
  std::vector<uint8_t> out;
  COILGUN_TRY(write_response_head(head, out));
  response_started_ = true;
  framing_ = switching ? ResponseFraming::kUntilClose
                       : (head_request_ ? ResponseFraming::kNone : framing);
  write(std::move(out));
  if (switching) {
    upgraded_ = true;
    // Bytes the client sent early are passed on from the loop, not from inside this call.
    idle_.start(std::chrono::milliseconds(0), [this] { process(); });
  }
  return Status::Ok();
}

void ServerConnection::respond_body(std::span<const uint8_t> data) {
  if (closed_ || !in_exchange_ || !response_started_) return;
  if (data.empty() || framing_ == ResponseFraming::kNone) return;
  std::vector<uint8_t> out;
  if (framing_ == ResponseFraming::kChunked) {
    out.reserve(data.size() + 16);
    write_chunk(data, out);
  } else {
    out.assign(data.begin(), data.end());
  }
  write(std::move(out));
}

void ServerConnection::respond_end() {
  // No trailers: the last chunk is always written.
  if (!respond_end(std::span<const Header>()).ok()) close();
}

Status ServerConnection::respond_end(std::span<const Header> trailers) {
  if (closed_ || !in_exchange_ || !response_started_) return Status::Ok();
  if (framing_ == ResponseFraming::kChunked) {
    std::vector<uint8_t> out;
    COILGUN_TRY(write_last_chunk(trailers, out));
    write(std::move(out));
    if (closed_) return Status::Ok();  // The write failed: the exchange was aborted.
  }
  finish_exchange();
  return Status::Ok();
}

void ServerConnection::respond_simple(int status, std::string_view body, bool close,
                                      std::string_view content_type) {
  if (closed_) return;
  ResponseHead head;
  head.status = status;
  head.headers.push_back({"Content-Type", std::string(content_type)});
  if (!options_.server_name.empty()) head.headers.push_back({"Server", options_.server_name});
  if (close) close_after_ = true;
  if (!in_exchange_) {
    // An error before any request (or after the last one): a bare response, then close.
    in_exchange_ = true;
    response_started_ = false;
    head_request_ = false;
  }
  if (response_started_) {
    this->close();  // A head already went out: a second status line would corrupt the stream.
    return;
  }
  if (!respond_head(std::move(head), ResponseFraming::kContentLength, body.size()).ok()) {
    // Only a server_name or content_type that is no field value gets here: the connection has
    // no other way to answer.
    this->close();
    return;
  }
  respond_body(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(body.data()), body.size()));
  respond_end();
}

// The response is complete. The exchange ends when its request has ended too; a request
// with a body still coming cannot be told apart from the next one, so the connection closes
// after such a response (an early error answer).
void ServerConnection::finish_exchange() {
  response_done_ = true;
  if (request_done_) return end_exchange();
  if (parser_->framing() != BodyFraming::kNone) close_after_ = true;
  if (close_after_) return end_exchange();
  // No body: the request's end is parsed next (in this feed, or the next one).
}

void ServerConnection::end_exchange() {
  in_exchange_ = false;
  release_exchange();
  if (close_after_) {
    // The FIN follows the queued writes; the handler hears on_closed on the next turn.
    closing_ = true;
    socket_->stop_read();
    socket_->shutdown();
    idle_.start(std::chrono::milliseconds(0), [this] { close(); });
    return;
  }
  // A pipelined request's bytes may be here already: its head's deadline runs from now.
  if (pending_.empty()) {
    arm_idle();
  } else {
    start_head_deadline();
  }
  (void)unpause_socket();    // Reading starts again in process().
  if (!in_feed_) process();  // Inside a parser callback, process() goes on when feed returns.
}

bool ServerConnection::writable() const {
  return socket_->write_queue_bytes() <= options_.high_watermark;
}

void ServerConnection::pause_reading() {
  pause_socket();
  if (in_exchange_ && !request_done_) idle_.stop();  // The body deadline waits too.
}

void ServerConnection::resume_reading() {
  if (!unpause_socket()) return;
  if (in_exchange_ && !request_done_ && !upgraded_) arm_body_deadline();
  process();
}

void ServerConnection::on_eof() {
  eof_ = true;
  if (closed_ || closing_) return;
  if (upgraded_) return pass_upgraded();
  (void)parser_->finish();  // Lets a close-delimited request body end; nothing to answer.
  if (in_exchange_ && !request_done_) {
    // The client went away mid-request.
    close();
    return;
  }
  if (!in_exchange_) close();
  // Otherwise the response in progress finishes first (a client may half-close after its
  // request); finish_exchange() then sees eof_ through process().
}

void ServerConnection::on_error(Status) { close(); }

void ServerConnection::on_drained() {
  if (was_unwritable_ && socket_->write_queue_bytes() <= options_.low_watermark) {
    was_unwritable_ = false;
    if (!in_exchange_) return;
    if (exchange_) return exchange_->on_writable();
    handler_.on_writable(*this);
  }
}

void ServerConnection::close() {
  if (closed_) return;
  closed_ = true;
  idle_.stop();
  socket_->stop_read();
  if (in_exchange_) abort_exchange();
  handler_.on_closed(*this);
}

// The exchange ends without a complete response: its object, or else the handler, hears it.
void ServerConnection::abort_exchange() {
  in_exchange_ = false;
  if (!exchange_) return handler_.on_abort(*this);
  exchange_->on_abort();
  release_exchange();
}

// The exchange's object goes to the loop, which deletes it on a later turn: this may run inside
// one of its own calls (respond_end from inside on_request_end).
void ServerConnection::release_exchange() {
  if (exchange_) loop_.defer_delete(std::move(exchange_));
}

// ---- Server -------------------------------------------------------------------------------

Server::Server(uv::Loop& loop, ServerOptions options)
    : loop_(loop), options_(std::move(options)), listener_(loop) {}

Server::~Server() { close_all(); }

Status Server::listen(const std::string& host, uint16_t port, uv::PortSharing sharing) {
  auto on_accept = [this](std::unique_ptr<uv::TcpStream> socket) {
    if (options_.max_connections != 0 && open_.size() >= options_.max_connections) {
      on_connection_refused();
      return;  // The socket closes as it goes.
    }
    auto c = std::make_unique<ServerConnection>(loop_, std::move(socket), *this, options_);
    ServerConnection* key = c.get();
    open_.emplace(key, std::move(c));
  };
  return listener_.listen(host, port, std::move(on_accept), sharing);
}

void Server::on_closed(ServerConnection& c) {
  auto it = open_.find(&c);
  if (it == open_.end()) return;
  std::unique_ptr<ServerConnection> gone = std::move(it->second);
  open_.erase(it);
  loop_.defer_delete(std::move(gone));
}

void Server::close_all() {
  std::vector<ServerConnection*> all;
  for (const auto& [c, owned] : open_) all.push_back(c);
  for (ServerConnection* c : all) c->close();
}

}  // namespace coilgun::http
