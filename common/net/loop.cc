#include "common/net/loop.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace coilgun::uv {
namespace {

uv_handle_t* as_handle(void* h) { return static_cast<uv_handle_t*>(h); }

template <typename H>
void close_and_free(H* h) {
  h->data = nullptr;
  if (!uv_is_closing(as_handle(h))) {
    uv_close(as_handle(h), [](uv_handle_t* x) { delete reinterpret_cast<H*>(x); });
  }
}

// Reads land here: one buffer per thread is enough because libuv hands each read to its
// callback before the next allocation, and the handler consumes it synchronously.
constexpr size_t kReadBufferSize = 64 * 1024;
thread_local char t_read_buffer[kReadBufferSize];

struct WriteReq {
  uv_write_t req;
  std::vector<uint8_t> data;
};

}  // namespace

struct Linger {
  Loop* loop;
  uv_tcp_t* handle;
  uv_shutdown_t* shutdown;  // Null once its callback ran: the FIN is out.
  uv_timer_t timer;
  bool peer_done = false;  // The peer closed its side (or the socket failed).
};

// Closes a lingering socket (cancelling what it still had to send, if anything) and frees the
// record once its timer is closed.
void end_linger(Linger* l) {
  if (l->shutdown != nullptr) l->shutdown->data = nullptr;
  l->shutdown = nullptr;
  close_and_free(l->handle);
  l->loop->lingering_.erase(l->handle);
  uv_close(as_handle(&l->timer), [](uv_handle_t* t) { delete static_cast<Linger*>(t->data); });
}

// A lingering socket reads and drops what the peer still sends (the rest of a request body
// answered early): closing with unread bytes would send a reset, and the peer's kernel would
// drop the answer it has not read yet. It closes once its FIN is out and the peer's came.
void on_linger_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t*) {
  if (nread >= 0) return;  // Dropped (or nothing read).
  uv_read_stop(stream);
  auto* handle = reinterpret_cast<uv_tcp_t*>(stream);
  auto& lingering = static_cast<Loop*>(handle->loop->data)->lingering_;
  const auto it = lingering.find(handle);
  if (it == lingering.end()) return;
  Linger* l = it->second;
  l->peer_done = true;
  if (l->shutdown == nullptr) end_linger(l);
}

Status from_uv(int err, const char* what, Side side) {
  switch (err) {
    case UV_ETIMEDOUT:
      return Status(Code::kTimeout, what, side, true);
    case UV_ECONNREFUSED:
      return Status(Code::kRefused, what, side, true);
    case UV_ECONNRESET:
    case UV_EPIPE:
    case UV_EOF:
    case UV_ECANCELED:
      return Status(Code::kClosed, what, side, true);
    default:
      return Status(Code::kIo, what, side, true);
  }
}

// ---- Loop ---------------------------------------------------------------------------------

Loop::Loop() : flush_timer_(new uv_timer_t) {
  uv_loop_init(&loop_);
  loop_.data = this;
  uv_timer_init(&loop_, flush_timer_);
  flush_timer_->data = this;
  mailbox_->async_ = new uv_async_t;
  uv_async_init(&loop_, mailbox_->async_, on_mail);
  mailbox_->async_->data = this;
  uv_unref(as_handle(mailbox_->async_));  // Mail may come; the loop does not wait for it.
}

Loop::~Loop() { close(); }

int Loop::close() {
  if (closed_) return 0;
  closed_ = true;
  std::vector<std::function<void()>> dropped;  // Destroyed outside the lock: they may post.
  {
    std::lock_guard lock(mailbox_->mu_);
    mailbox_->async_->data = nullptr;
    close_and_free(mailbox_->async_);
    mailbox_->async_ = nullptr;
    dropped.swap(mailbox_->queue_);
  }
  dropped.clear();
  posted_.clear();
  doomed_.clear();
  while (!lingering_.empty()) end_linger(lingering_.begin()->second);
  close_and_free(flush_timer_);
  // Let the close callbacks of everything already closing run, then close stragglers (owned
  // by nobody any more: a bug elsewhere, but never a hang here).
  uv_run(&loop_, UV_RUN_DEFAULT);
  uv_walk(
      &loop_,
      [](uv_handle_t* h, void*) {
        if (!uv_is_closing(h)) uv_close(h, nullptr);
      },
      nullptr);
  uv_run(&loop_, UV_RUN_DEFAULT);
  return uv_loop_close(&loop_);
}

void Loop::run() { uv_run(&loop_, UV_RUN_DEFAULT); }

void Loop::stop() { uv_stop(&loop_); }

void Loop::defer_delete(std::unique_ptr<Deferred> object) {
  if (!object) return;
  doomed_.push_back(std::move(object));
  arm_flush();
}

void Loop::post(std::function<void()> fn) {
  if (closed_ || !fn) return;
  posted_.push_back(std::move(fn));
  arm_flush();
}

// A zero timer: it runs on the next turn's timer phase, and the poll before it does not block.
void Loop::arm_flush() {
  if (!uv_is_active(as_handle(flush_timer_))) uv_timer_start(flush_timer_, on_flush, 0, 0);
}

void Loop::on_flush(uv_timer_t* t) {
  auto* self = static_cast<Loop*>(t->data);
  if (self == nullptr) return;
  // Running and deleting may queue more (for the next turn): take the lists first.
  std::vector<std::function<void()>> run;
  run.swap(self->posted_);
  for (auto& fn : run) fn();
  std::vector<std::unique_ptr<Deferred>> batch;
  batch.swap(self->doomed_);
  batch.clear();
}

void Loop::on_mail(uv_async_t* a) {
  auto* self = static_cast<Loop*>(a->data);
  if (self == nullptr) return;
  std::vector<std::function<void()>> run;
  {
    std::lock_guard lock(self->mailbox_->mu_);
    run.swap(self->mailbox_->queue_);
  }
  for (auto& fn : run) fn();
}

bool Mailbox::post(std::function<void()> fn) {
  std::lock_guard lock(mu_);
  if (async_ == nullptr) return false;
  queue_.push_back(std::move(fn));
  uv_async_send(async_);
  return true;
}

// ---- Addresses ----------------------------------------------------------------------------

bool parse_ip(const std::string& ip, uint16_t port, sockaddr_storage& out) {
  std::memset(&out, 0, sizeof out);
  auto* v4 = reinterpret_cast<sockaddr_in*>(&out);
  if (uv_ip4_addr(ip.c_str(), port, v4) == 0) return true;
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&out);
  return uv_ip6_addr(ip.c_str(), port, v6) == 0;
}

std::string format_address(const sockaddr* addr) {
  char ip[INET6_ADDRSTRLEN] = {};
  if (addr->sa_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(addr);
    uv_ip4_name(v4, ip, sizeof ip);
    std::string s = ip;
    s.append(":").append(std::to_string(ntohs(v4->sin_port)));
    return s;
  }
  if (addr->sa_family == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(addr);
    uv_ip6_name(v6, ip, sizeof ip);
    std::string s = "[";
    s.append(ip).append("]:").append(std::to_string(ntohs(v6->sin6_port)));
    return s;
  }
  return "?";
}

// ---- TcpStream ----------------------------------------------------------------------------

TcpStream::TcpStream(uv_tcp_t* handle, Handler* handler) : handle_(handle), handler_(handler) {
  handle_->data = this;
}

TcpStream::~TcpStream() {
  if ((shutdown_ != nullptr || fin_sent_) && !failed_) {
    linger();
    return;
  }
  close_and_free(handle_);
}

void TcpStream::linger() {
  stop_read();
  handle_->data = nullptr;
  auto* loop = static_cast<Loop*>(handle_->loop->data);
  auto* l = new Linger{loop, handle_, shutdown_, {}};
  if (shutdown_ != nullptr) shutdown_->data = l;
  uv_timer_init(handle_->loop, &l->timer);
  l->timer.data = l;
  uv_timer_start(
      &l->timer, [](uv_timer_t* t) { end_linger(static_cast<Linger*>(t->data)); },
      static_cast<uint64_t>(kLingerTimeout.count()), 0);
  loop->lingering_.emplace(handle_, l);
  if (uv_read_start(reinterpret_cast<uv_stream_t*>(handle_), on_alloc, on_linger_read) < 0) {
    l->peer_done = true;  // Nothing more can be read: close once the FIN is out.
  }
}

void TcpStream::set_handler(Handler* handler) { handler_ = handler; }

Status TcpStream::set_filter(std::unique_ptr<StreamFilter> filter) {
  filter_ = std::move(filter);
  std::vector<uint8_t> wire;
  if (Status s = filter_->send({}, wire); !s.ok()) {
    fail(s);
    return s;
  }
  return write_wire(std::move(wire));
}

bool TcpStream::filter_read(std::span<const uint8_t> data, std::vector<uint8_t>& plain) {
  std::vector<uint8_t> wire;
  const Status s = filter_->feed(data, plain, wire);
  // What the filter answers goes out even after an error (a TLS alert says why).
  if (!write_wire(std::move(wire)).ok()) return false;
  if (!s.ok()) {
    stop_read();
    fail(s);
    return false;
  }
  // The peer closed its side cleanly: close ours the same way (a TLS peer may wait for our
  // close_notify before it sends its FIN, which ends the stream for the owner).
  if (filter_->peer_closed()) shutdown();
  return true;
}

Status TcpStream::start_read() {
  if (reading_) return Status::Ok();
  const int r = uv_read_start(reinterpret_cast<uv_stream_t*>(handle_), on_alloc, on_read_cb);
  if (r < 0) return from_uv(r, "cannot read from socket");
  reading_ = true;
  return Status::Ok();
}

void TcpStream::stop_read() {
  if (!reading_) return;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(handle_));
  reading_ = false;
}

bool TcpStream::quiet() const {
  uv_os_fd_t fd;
  if (uv_fileno(as_handle(handle_), &fd) != 0) return false;
  uint8_t byte;
  const ssize_t n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

void TcpStream::on_alloc(uv_handle_t*, size_t, uv_buf_t* buf) {
  *buf = uv_buf_init(t_read_buffer, kReadBufferSize);
}

void TcpStream::on_read_cb(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  auto* self = static_cast<TcpStream*>(s->data);
  if (self == nullptr || self->handler_ == nullptr) return;
  if (n > 0) {
    self->bytes_read_ += static_cast<uint64_t>(n);
    std::span<const uint8_t> data(reinterpret_cast<const uint8_t*>(buf->base),
                                  static_cast<size_t>(n));
    std::vector<uint8_t> plain;
    if (self->filter_ != nullptr) {
      if (!self->filter_read(data, plain) || plain.empty()) return;
      data = plain;
    }
    // The handler may destroy this stream: nothing touches |self| after the call.
    self->handler_->on_read(data);
  } else if (n == UV_EOF) {
    self->stop_read();
    self->handler_->on_eof();
  } else if (n < 0) {
    self->stop_read();
    self->fail(from_uv(static_cast<int>(n), "socket read failed"));
  }
}

Status TcpStream::write(std::vector<uint8_t>&& data) {
  if (failed_) return Status(Code::kClosed, "socket already failed");
  if (filter_ == nullptr) return write_wire(std::move(data));
  std::vector<uint8_t> wire;
  if (const Status s = filter_->send(data, wire); !s.ok()) {
    fail(s);
    return s;
  }
  return write_wire(std::move(wire));
}

Status TcpStream::write_wire(std::vector<uint8_t>&& data) {
  if (failed_) return Status(Code::kClosed, "socket already failed");
  if (data.empty()) return Status::Ok();
  auto* w = new WriteReq{{}, std::move(data)};
  w->req.data = w;
  uv_buf_t b =
      uv_buf_init(reinterpret_cast<char*>(w->data.data()), static_cast<unsigned>(w->data.size()));
  const int r = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(handle_), &b, 1, on_write_cb);
  if (r < 0) {
    delete w;
    const Status s = from_uv(r, "socket write failed");
    fail(s);
    return s;
  }
  return Status::Ok();
}

void TcpStream::on_write_cb(uv_write_t* req, int status) {
  auto* w = static_cast<WriteReq*>(req->data);
  const size_t size = w->data.size();
  auto* self = static_cast<TcpStream*>(req->handle->data);
  delete w;                     // Whatever happened, libuv is done with the buffer.
  if (self == nullptr) return;  // The stream is gone (status is then UV_ECANCELED).
  if (status < 0) {
    self->fail(from_uv(status, "socket write failed"));
    return;
  }
  self->bytes_written_ += size;
  if (self->write_queue_bytes() == 0 && self->handler_ != nullptr) self->handler_->on_drained();
}

size_t TcpStream::write_queue_bytes() const {
  return uv_stream_get_write_queue_size(reinterpret_cast<const uv_stream_t*>(handle_)) +
         (filter_ != nullptr ? filter_->held() : 0);
}

void TcpStream::shutdown() {
  if (shutdown_ != nullptr || fin_sent_ || failed_) return;
  if (filter_ != nullptr) {
    std::vector<uint8_t> wire;
    filter_->close(wire);
    if (!write_wire(std::move(wire)).ok()) return;
  }
  auto* req = new uv_shutdown_t;
  req->data = nullptr;
  if (uv_shutdown(req, reinterpret_cast<uv_stream_t*>(handle_), on_shutdown_cb) < 0) {
    delete req;
    return;
  }
  shutdown_ = req;
}

// |req->data| is null while the stream lives (or when it was closed outright), and the
// Linger record once the stream is gone: the FIN is out, so the socket can close now.
void TcpStream::on_shutdown_cb(uv_shutdown_t* req, int) {
  auto* l = static_cast<Linger*>(req->data);
  auto* self = static_cast<TcpStream*>(req->handle->data);
  delete req;
  if (l != nullptr) {
    l->shutdown = nullptr;
    if (l->peer_done) end_linger(l);  // Else once the peer's FIN comes (or the timer fires).
  } else if (self != nullptr) {
    self->shutdown_ = nullptr;
    self->fin_sent_ = true;
  }
}

void TcpStream::fail(Status status) {
  if (failed_) return;
  failed_ = true;
  if (handler_ != nullptr) handler_->on_error(status);
}

std::string TcpStream::peer_address() const {
  sockaddr_storage addr{};
  int len = sizeof addr;
  if (uv_tcp_getpeername(handle_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return "?";
  return format_address(reinterpret_cast<sockaddr*>(&addr));
}

std::string TcpStream::peer_ip() const {
  sockaddr_storage addr{};
  int len = sizeof addr;
  if (uv_tcp_getpeername(handle_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return "";
  char ip[INET6_ADDRSTRLEN] = {};
  if (addr.ss_family == AF_INET) {
    uv_ip4_name(reinterpret_cast<sockaddr_in*>(&addr), ip, sizeof ip);
  } else {
    uv_ip6_name(reinterpret_cast<sockaddr_in6*>(&addr), ip, sizeof ip);
  }
  return ip;
}

void TcpStream::set_nodelay(bool on) { uv_tcp_nodelay(handle_, on ? 1 : 0); }

std::optional<uint32_t> TcpStream::ms_since_ack() const {
  uv_os_fd_t fd;
  if (uv_fileno(reinterpret_cast<const uv_handle_t*>(handle_), &fd) != 0) return std::nullopt;
  tcp_info info{};
  socklen_t len = sizeof info;
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return std::nullopt;
  return info.tcpi_last_ack_recv;
}

void TcpStream::set_notsent_lowat(uint32_t bytes) {
  uv_os_fd_t fd;
  if (uv_fileno(reinterpret_cast<const uv_handle_t*>(handle_), &fd) != 0) return;
  const int value = static_cast<int>(bytes);
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &value, sizeof value);
}

// ---- TcpListener --------------------------------------------------------------------------

namespace {

// Sets SO_REUSEPORT on |handle|'s socket; 0 or a libuv error.
int allow_port_sharing(uv_tcp_t* handle) {
  uv_os_fd_t fd;
  const int r = uv_fileno(as_handle(handle), &fd);
  if (r != 0) return r;
  const int one = 1;
  return setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) == 0
             ? 0
             : uv_translate_sys_error(errno);
}

}  // namespace

TcpListener::TcpListener(Loop& loop) : loop_(loop) {}

TcpListener::~TcpListener() { close(); }

Status TcpListener::listen(const std::string& host, uint16_t port, OnAccept on_accept,
                           PortSharing sharing, int backlog) {
  sockaddr_storage addr;
  if (!parse_ip(host, port, addr)) return Status(Code::kConfig, "listen address is not an IP");
  close();
  handle_ = new uv_tcp_t;
  int r = uv_tcp_init_ex(loop_.get(), handle_, addr.ss_family);
  if (r < 0) {
    delete handle_;
    handle_ = nullptr;
    return from_uv(r, "cannot create socket");
  }
  handle_->data = this;
  // Order matters (see PortSharing): a joining socket sets SO_REUSEPORT before bind, the
  // first one after. uv_tcp_bind binds at once (libuv sets SO_REUSEADDR, for TIME_WAIT).
  if (sharing == PortSharing::kJoin) r = allow_port_sharing(handle_);
  if (r == 0) r = uv_tcp_bind(handle_, reinterpret_cast<const sockaddr*>(&addr), 0);
  if (r == 0 && sharing == PortSharing::kFirst) r = allow_port_sharing(handle_);
  if (r == 0) r = uv_listen(reinterpret_cast<uv_stream_t*>(handle_), backlog, on_connection);
  if (r < 0) {
    close();
    // uv_strerror's text is static for every error the OS gives here.
    return Status(Code::kIo, uv_strerror(r));
  }
  on_accept_ = std::move(on_accept);
  return Status::Ok();
}

void TcpListener::on_connection(uv_stream_t* server, int status) {
  auto* self = static_cast<TcpListener*>(server->data);
  if (self == nullptr || status < 0) return;
  auto* client = new uv_tcp_t;
  uv_tcp_init(self->loop_.get(), client);
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(client)) != 0) {
    uv_close(as_handle(client), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
    return;
  }
  self->on_accept_(std::make_unique<TcpStream>(client, nullptr));
}

uint16_t TcpListener::port() const {
  if (handle_ == nullptr) return 0;
  sockaddr_storage addr{};
  int len = sizeof addr;
  if (uv_tcp_getsockname(handle_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return 0;
  if (addr.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  return ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
}

std::string TcpListener::address() const {
  if (handle_ == nullptr) return "";
  sockaddr_storage addr{};
  int len = sizeof addr;
  if (uv_tcp_getsockname(handle_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return "";
  return format_address(reinterpret_cast<sockaddr*>(&addr));
}

void TcpListener::close() {
  if (handle_ == nullptr) return;
  close_and_free(handle_);
  handle_ = nullptr;
}

// ---- TcpConnector -------------------------------------------------------------------------

// One connection attempt. It outlives its connector when cancelled: libuv still runs the
// callbacks of what was in flight (name lookup, connect), which find |done| set and release
// their hold; the last hold frees the attempt.
struct TcpConnector::Attempt {
  TcpConnector* owner;
  Loop* loop;
  uv_getaddrinfo_t resolve{};
  uv_connect_t connect{};
  uv_tcp_t* tcp = nullptr;  // Owned until handed to a TcpStream.
  uv_timer_t* timer = nullptr;
  int holds = 0;  // Callbacks still to come that will touch this attempt.
  bool done = false;

  void release() {
    if (--holds == 0 && done) delete this;
  }

  // Stops everything in flight; callbacks still to come only release their holds.
  void stop() {
    done = true;
    if (timer != nullptr) {
      close_and_free(timer);
      timer = nullptr;
    }
    if (tcp != nullptr) {
      close_and_free(tcp);  // A pending connect completes with UV_ECANCELED.
      tcp = nullptr;
    }
    uv_cancel(reinterpret_cast<uv_req_t*>(&resolve));  // Fails harmlessly if not pending.
  }
};

TcpConnector::TcpConnector(Loop& loop) : loop_(loop) {}

TcpConnector::~TcpConnector() {
  if (attempt_ == nullptr) return;
  Attempt* a = attempt_;
  attempt_ = nullptr;
  a->owner = nullptr;
  a->stop();
  if (a->holds == 0) delete a;
}

void TcpConnector::connect(const std::string& host, uint16_t port,
                           std::chrono::milliseconds timeout, OnConnect done) {
  if (attempt_ != nullptr) {
    done(Status(Code::kInternal, "connector already busy"));
    return;
  }
  auto* a = new Attempt{this, &loop_};
  attempt_ = a;
  done_ = std::move(done);

  a->timer = new uv_timer_t;
  uv_timer_init(loop_.get(), a->timer);
  a->timer->data = a;
  uv_timer_start(
      a->timer,
      [](uv_timer_t* t) {
        auto* at = static_cast<Attempt*>(t->data);
        if (at != nullptr && at->owner != nullptr) {
          at->owner->finish(Status(Code::kTimeout, "connect timed out", Side::kUpstream, true));
        }
      },
      static_cast<uint64_t>(timeout.count()), 0);

  a->resolve.data = a;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  const std::string service = std::to_string(port);
  ++a->holds;
  const int r = uv_getaddrinfo(
      loop_.get(), &a->resolve,
      [](uv_getaddrinfo_t* req, int status, addrinfo* res) {
        auto* at = static_cast<Attempt*>(req->data);
        if (at->done || at->owner == nullptr) {
          if (res != nullptr) uv_freeaddrinfo(res);
          at->release();
          return;
        }
        if (status < 0 || res == nullptr) {
          if (res != nullptr) uv_freeaddrinfo(res);
          TcpConnector* owner = at->owner;
          at->release();
          owner->finish(Status(Code::kRefused, "cannot resolve the host name", Side::kUpstream));
          return;
        }
        at->tcp = new uv_tcp_t;
        uv_tcp_init(at->loop->get(), at->tcp);
        at->connect.data = at;
        ++at->holds;
        const int c =
            uv_tcp_connect(&at->connect, at->tcp, res->ai_addr, [](uv_connect_t* cr, int cs) {
              auto* a2 = static_cast<Attempt*>(cr->data);
              if (a2->done || a2->owner == nullptr) {
                a2->release();
                return;
              }
              TcpConnector* owner = a2->owner;
              if (cs < 0) {
                a2->release();
                owner->finish(from_uv(cs, "cannot connect", Side::kUpstream));
                return;
              }
              uv_tcp_t* tcp = a2->tcp;
              a2->tcp = nullptr;
              a2->release();
              owner->finish(std::make_unique<TcpStream>(tcp, nullptr));
            });
        uv_freeaddrinfo(res);
        if (c < 0) {
          --at->holds;
          TcpConnector* owner = at->owner;
          at->release();
          owner->finish(from_uv(c, "cannot connect", Side::kUpstream));
          return;
        }
        at->release();
      },
      host.c_str(), service.c_str(), &hints);
  if (r < 0) {
    --a->holds;
    finish(from_uv(r, "cannot resolve the host name", Side::kUpstream));
  }
}

void TcpConnector::finish(Result<std::unique_ptr<TcpStream>> result) {
  Attempt* a = attempt_;
  if (a == nullptr) return;
  attempt_ = nullptr;
  a->owner = nullptr;
  a->stop();
  if (a->holds == 0) delete a;
  OnConnect done = std::move(done_);
  done_ = nullptr;
  done(std::move(result));  // May destroy this connector: nothing touches |this| after.
}

// ---- Timer, SignalWatcher, Async ----------------------------------------------------------

Timer::Timer(Loop& loop) : handle_(new uv_timer_t) {
  uv_timer_init(loop.get(), handle_);
  handle_->data = this;
}

Timer::~Timer() { close_and_free(handle_); }

void Timer::start(std::chrono::milliseconds delay, std::function<void()> fn,
                  std::chrono::milliseconds repeat) {
  fn_ = std::move(fn);
  uv_timer_start(handle_, on_timer, static_cast<uint64_t>(delay.count()),
                 static_cast<uint64_t>(repeat.count()));
}

void Timer::stop() { uv_timer_stop(handle_); }

bool Timer::active() const { return uv_is_active(reinterpret_cast<uv_handle_t*>(handle_)) != 0; }

void Timer::on_timer(uv_timer_t* t) {
  auto* self = static_cast<Timer*>(t->data);
  if (self == nullptr) return;
  // A copy: the callback may destroy this Timer, and with it fn_.
  std::function<void()> fn = self->fn_;
  fn();
}

SignalWatcher::SignalWatcher(Loop& loop) : handle_(new uv_signal_t) {
  uv_signal_init(loop.get(), handle_);
  handle_->data = this;
}

SignalWatcher::~SignalWatcher() { close_and_free(handle_); }

Status SignalWatcher::start(int signum, std::function<void(int)> fn) {
  fn_ = std::move(fn);
  const int r = uv_signal_start(handle_, on_signal, signum);
  if (r < 0) return from_uv(r, "cannot watch the signal");
  return Status::Ok();
}

void SignalWatcher::on_signal(uv_signal_t* s, int signum) {
  auto* self = static_cast<SignalWatcher*>(s->data);
  if (self == nullptr) return;
  std::function<void(int)> fn = self->fn_;
  fn(signum);
}

Async::Async(Loop& loop, std::function<void()> fn) : handle_(new uv_async_t), fn_(std::move(fn)) {
  uv_async_init(loop.get(), handle_, on_async);
  handle_->data = this;
}

Async::~Async() { close_and_free(handle_); }

void Async::send() { uv_async_send(handle_); }

void Async::on_async(uv_async_t* a) {
  auto* self = static_cast<Async*>(a->data);
  if (self == nullptr) return;
  std::function<void()> fn = self->fn_;
  fn();
}

}  // namespace coilgun::uv
