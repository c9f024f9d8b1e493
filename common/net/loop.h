#pragma once
// RAII owners for libuv: a loop, TCP listeners, streams and connectors, timers, signals and
// cross-thread wakeups.
//
// Lifetime rules (libuv's contract): a handle's memory may be freed only in its close
// callback, which runs on a later loop turn. So each owner here keeps its libuv handle in a
// separate heap block; the owner's destructor clears the handle's back pointer and closes it,
// and the block frees itself in the close callback. Callbacks reach their owner through that
// back pointer and do nothing once it is cleared, so an owner may be destroyed at any time on
// its loop's thread, even from inside one of its own callbacks (the callback must then return
// without touching |this|). Everything here belongs to one loop and one thread unless a
// comment says otherwise (Async::send is the only cross-thread entry).
//
// Errors from libuv (negative ints) are converted once, here, with from_uv().

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "proto/status.h"

namespace coilgun::uv {

// Converts libuv error |err| into a Status with |what| as the message. Timeouts, refusals
// and resets map to kTimeout, kRefused and kClosed; other errors to kIo.
Status from_uv(int err, const char* what, Side side = Side::kInternal);

// A stream destroyed after shutdown(), still sending or waiting for the peer's FIN (see
// TcpStream::~TcpStream).
struct Linger;

// Something the loop deletes for its owner on a later turn (see Loop::defer_delete).
class Deferred {
 public:
  virtual ~Deferred() = default;
};

// A loop's queue for functions posted from other threads (Loop::mailbox()). It outlives the
// loop: post() after the loop closed drops the function (destroyed on the posting thread).
class Mailbox {
 public:
  // Runs |fn| on the loop's thread on a later turn, in the order posted. Any thread. False if
  // the loop is closed (|fn| was dropped).
  bool post(std::function<void()> fn);

 private:
  friend class Loop;
  std::mutex mu_;
  uv_async_t* async_ = nullptr;               // Null once the loop closed. Guarded by mu_.
  std::vector<std::function<void()>> queue_;  // Guarded by mu_.
};

// One libuv loop. Create, run and destroy it on one thread.
class Loop {
 public:
  Loop();
  // close(), if not done yet.
  ~Loop();
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  uv_loop_t* get() { return &loop_; }
  // Runs until stop() or until nothing is left to do.
  void run();
  // Makes run() return after the current turn. Loop thread only.
  void stop();
  // The loop's cached monotonic time in milliseconds.
  uint64_t now_ms() const { return uv_now(&loop_); }
  // Reads the clock now: a timer started from outside a loop turn (a test between runs)
  // otherwise counts from when the loop last ran.
  void update_time() { uv_update_time(&loop_); }

  // Takes |object| and deletes it on a later loop turn: the way to destroy something from
  // inside its own callback without pulling the stack out from under it.
  void defer_delete(std::unique_ptr<Deferred> object);
  // The same for an object of any type.
  template <typename T>
  void defer_delete(std::unique_ptr<T> object) requires(!std::is_base_of_v<Deferred, T>) {
    struct Holder : Deferred {
      std::unique_ptr<T> held;
    };
    auto h = std::make_unique<Holder>();
    h->held = std::move(object);
    defer_delete(std::unique_ptr<Deferred>(std::move(h)));
  }

  // Runs |fn| on a later turn of this loop (never inside this call), after what was posted
  // before it. Loop thread only: other threads post through mailbox().
  void post(std::function<void()> fn);
  // This loop's queue for other threads (see Mailbox).
  std::shared_ptr<Mailbox> mailbox() const { return mailbox_; }

  // Deletes what is deferred, drops what is posted, cuts lingering streams short, closes every
  // handle still open (their owners must be gone or never used again), runs the loop until their
  // close callbacks ran, and closes it. Returns uv_loop_close's result: 0 unless a handle could not
  // be closed (tests require 0).
  int close();

 private:
  static void on_flush(uv_timer_t* t);
  static void on_mail(uv_async_t* a);
  void arm_flush();
  friend class TcpStream;
  friend void end_linger(Linger* l);
  friend void on_linger_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);
  bool closed_ = false;
  // Owned: each frees itself when its socket is closed. By handle: the socket's read callback
  // finds its record here (the handle's data must stay null for its pending writes).
  std::unordered_map<uv_tcp_t*, Linger*> lingering_;

  uv_loop_t loop_;
  uv_timer_t* flush_timer_;  // Freed in its close callback. Runs posted_, then deletes doomed_.
  std::vector<std::unique_ptr<Deferred>> doomed_;
  std::vector<std::function<void()>> posted_;
  std::shared_ptr<Mailbox> mailbox_ = std::make_shared<Mailbox>();
};

// Parses "1.2.3.4" or "::1" with |port| into |out|. Returns false if |ip| is not an address.
bool parse_ip(const std::string& ip, uint16_t port, sockaddr_storage& out);
// "ip:port" ("[ip]:port" for IPv6) of a socket address.
std::string format_address(const sockaddr* addr);

class TcpStream;

// What stands between a TcpStream's owner and the wire (TLS: tls::TlsFilter): the owner reads
// and writes its bytes as before, and the stream passes them through the filter. Loop thread
// only; no I/O of its own.
class StreamFilter {
 public:
  virtual ~StreamFilter() = default;
  // Bytes read from the socket: appends what the owner reads to |plain| and what must go back
  // on the wire (a handshake's answer) to |wire|. An error fails the stream.
  virtual Status feed(std::span<const uint8_t> read, std::vector<uint8_t>& plain,
                      std::vector<uint8_t>& wire) = 0;
  // The owner's bytes (none: just what the filter has to send, such as a first handshake
  // message): appends what goes on the wire to |wire|.
  virtual Status send(std::span<const uint8_t> plain, std::vector<uint8_t>& wire) = 0;
  // Appends what goes on the wire before the FIN (TLS's close_notify).
  virtual void close(std::vector<uint8_t>& wire) = 0;
  // Bytes the owner wrote that are not on the wire yet (held until a handshake completes).
  virtual size_t held() const = 0;
  // The peer ended its side cleanly (TLS's close_notify): an end of stream after it is no cut.
  // The stream then shuts its own side down (shutdown()).
  virtual bool peer_closed() const = 0;
  // For the log line of a failure: what the filter knows beyond its Status (TLS: OpenSSL's
  // reason, the certificate's verification error and names). "" when it knows nothing more.
  virtual std::string error_detail() const { return {}; }
};

// A connected TCP socket. Reading delivers bytes to the handler as they arrive; writing
// queues owned buffers.
class TcpStream {
 public:
  class Handler {
   public:
    virtual ~Handler() = default;
    // Bytes read. The span is valid only during the call.
    virtual void on_read(std::span<const uint8_t> data) = 0;
    // The peer closed its side (no more reads).
    virtual void on_eof() = 0;
    // A read or write failed; the stream is unusable. Called at most once.
    virtual void on_error(Status status) = 0;
    // Every queued write has reached the kernel (the write queue is empty).
    virtual void on_drained() {}
  };

  // Wraps an initialized, connected handle (takes ownership of its heap block).
  TcpStream(uv_tcp_t* handle, Handler* handler);
  // Closes the socket. After shutdown(), the socket lingers instead until its FIN is out and
  // the peer's has come: its queued bytes and the FIN still go out, and what the peer still
  // sends is read and dropped (closing at once would cancel the one, or answer the other with
  // a reset, and cut a response short). Bounded by kLingerTimeout; Loop::close() cuts
  // lingering short.
  ~TcpStream();
  static constexpr std::chrono::milliseconds kLingerTimeout{10000};
  TcpStream(const TcpStream&) = delete;
  TcpStream& operator=(const TcpStream&) = delete;

  void set_handler(Handler* handler);
  // Puts |filter| between the owner and the wire, and sends what it has to send first. Call it
  // before the first write or read. An error (also reported through on_error) fails the stream.
  Status set_filter(std::unique_ptr<StreamFilter> filter);
  Status start_read();
  void stop_read();
  bool reading() const { return reading_; }

  // Queues |data| for writing; the stream owns it until libuv is done with it (a buffer may
  // outlive this TcpStream and is freed in the write callback). Errors are also reported
  // through on_error.
  Status write(std::vector<uint8_t>&& data);
  // Bytes queued and not yet handed to the kernel (and, with a filter, held by it).
  size_t write_queue_bytes() const;
  // Half-closes after every queued write (FIN), after the filter's closing bytes.
  void shutdown();
  // The FIN shutdown() asked for is out.
  bool fin_sent() const { return fin_sent_; }
  // Whether the peer's end of stream (on_eof) was a clean one: always without a filter; with
  // one, only after the filter's own close (a TLS stream cut by a bare FIN may be truncated).
  bool eof_clean() const { return filter_ == nullptr || filter_->peer_closed(); }
  // The filter's detail behind a failure (StreamFilter::error_detail); "" without a filter.
  std::string error_detail() const { return filter_ ? filter_->error_detail() : std::string(); }
  // Bytes read and written so far, for link-byte metrics.
  uint64_t bytes_read() const { return bytes_read_; }
  uint64_t bytes_written() const { return bytes_written_; }

  // True if the socket holds no unread byte and no end of stream from the peer right now: a
  // non-blocking peek at the kernel's receive queue (MSG_PEEK), so it sees what arrived since
  // the loop last polled. False also when the socket cannot be asked. For a connection about
  // to be reused: anything pending there was never asked for.
  bool quiet() const;

  std::string peer_address() const;
  // The peer's IP without the port.
  std::string peer_ip() const;
  void set_nodelay(bool on);
  // Bounds the bytes the kernel holds for this socket not yet sent (TCP_NOTSENT_LOWAT): writes
  // wait while more are unsent, so what is written next (a control frame) is not queued behind
  // a socket buffer's worth of bulk. Bytes sent and not yet acknowledged do not count, so it
  // costs no throughput on a long fat link. Best effort.
  void set_notsent_lowat(uint32_t bytes);
  // Milliseconds since the peer's TCP last acknowledged anything (TCP_INFO); nullopt when it
  // cannot be asked. It stays small while the link carries our bytes, whatever the peer's
  // application sends.
  std::optional<uint32_t> ms_since_ack() const;

 private:
  static void on_alloc(uv_handle_t*, size_t, uv_buf_t* buf);
  static void on_read_cb(uv_stream_t* s, ssize_t n, const uv_buf_t* buf);
  static void on_write_cb(uv_write_t* req, int status);
  static void on_shutdown_cb(uv_shutdown_t* req, int status);
  void fail(Status status);
  void linger();
  // Queues wire bytes (what write() does without a filter).
  Status write_wire(std::vector<uint8_t>&& data);
  // The filter's side of a read: false when the stream failed.
  bool filter_read(std::span<const uint8_t> data, std::vector<uint8_t>& plain);

  uv_tcp_t* handle_;
  std::unique_ptr<StreamFilter> filter_;
  uv_shutdown_t* shutdown_ = nullptr;  // Pending shutdown; freed in its callback.
  bool fin_sent_ = false;              // The shutdown completed: lingers all the same.
  Handler* handler_;
  bool reading_ = false;
  bool failed_ = false;
  uint64_t bytes_read_ = 0, bytes_written_ = 0;
};

// Who may listen on an address beside a listener. The workers of one process share theirs
// with SO_REUSEPORT, which lets the kernel spread connections over them. Linux admits a socket
// to such a group only when every socket in it set the option before it was bound, so the
// first worker binds without it (failing when anything at all holds the address: another
// program, or another copy of this daemon) and sets it once bound, before listening; the
// others then join. Nothing else can join but a program that sets SO_REUSEPORT itself.
enum class PortSharing {
  kNone,   // This listener alone.
  kFirst,  // Bound alone, then open to kJoin listeners on the same address.
  kJoin,   // Joins the address a kFirst listener opened.
};

// Accepts TCP connections on one address.
class TcpListener {
 public:
  // Called with each accepted connection; the callee owns it.
  using OnAccept = std::function<void(std::unique_ptr<TcpStream>)>;

  explicit TcpListener(Loop& loop);
  ~TcpListener();
  TcpListener(const TcpListener&) = delete;
  TcpListener& operator=(const TcpListener&) = delete;

  // Binds |host| (an IP address) and |port| (0: any free port) and starts listening. The
  // error's message is the OS's ("address already in use"): the caller names the address.
  Status listen(const std::string& host, uint16_t port, OnAccept on_accept,
                PortSharing sharing = PortSharing::kNone, int backlog = 1024);
  // The bound port (useful after listen on port 0).
  uint16_t port() const;
  std::string address() const;
  // Stops accepting (the socket closes on a later turn).
  void close();

 private:
  static void on_connection(uv_stream_t* server, int status);

  Loop& loop_;
  uv_tcp_t* handle_ = nullptr;
  OnAccept on_accept_;
};

// Connects to host:port (a name is resolved first), with a deadline.
class TcpConnector {
 public:
  using OnConnect = std::function<void(Result<std::unique_ptr<TcpStream>>)>;

  explicit TcpConnector(Loop& loop);
  // Cancels a connection attempt in flight (its callback never runs).
  ~TcpConnector();
  TcpConnector(const TcpConnector&) = delete;
  TcpConnector& operator=(const TcpConnector&) = delete;

  // Starts one attempt; |done| runs exactly once (on the loop), unless this connector is
  // destroyed first. One attempt at a time.
  void connect(const std::string& host, uint16_t port, std::chrono::milliseconds timeout,
               OnConnect done);
  bool busy() const { return attempt_ != nullptr; }

 private:
  struct Attempt;
  void finish(Result<std::unique_ptr<TcpStream>> result);

  Loop& loop_;
  Attempt* attempt_ = nullptr;  // Owned; see loop.cc for how it outlives a cancel.
  OnConnect done_;
};

// A one-shot or repeating timer.
class Timer {
 public:
  explicit Timer(Loop& loop);
  ~Timer();
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  // (Re)starts the timer: |fn| runs after |delay|, then every |repeat| if nonzero.
  void start(std::chrono::milliseconds delay, std::function<void()> fn,
             std::chrono::milliseconds repeat = std::chrono::milliseconds(0));
  void stop();
  bool active() const;

 private:
  static void on_timer(uv_timer_t* t);
  uv_timer_t* handle_;
  std::function<void()> fn_;
};

// Watches a signal (SIGTERM, SIGINT, SIGHUP, ...) on a loop.
class SignalWatcher {
 public:
  explicit SignalWatcher(Loop& loop);
  ~SignalWatcher();
  SignalWatcher(const SignalWatcher&) = delete;
  SignalWatcher& operator=(const SignalWatcher&) = delete;

  Status start(int signum, std::function<void(int)> fn);

 private:
  static void on_signal(uv_signal_t* s, int signum);
  uv_signal_t* handle_;
  std::function<void(int)> fn_;
};

// Wakes a loop from another thread: send() may be called from any thread; |fn| runs on the
// loop's thread (several sends may coalesce into one run).
class Async {
 public:
  Async(Loop& loop, std::function<void()> fn);
  ~Async();
  Async(const Async&) = delete;
  Async& operator=(const Async&) = delete;

  void send();

 private:
  static void on_async(uv_async_t* a);
  uv_async_t* handle_;
  std::function<void()> fn_;
};

}  // namespace coilgun::uv
