#pragma once
// HTTP/1.1 to a backend: one request at a time per connection, and a pool of idle keep-alive
// connections per backend (per loop), over TLS when the pool is given a context. Used by the
// origin agent, and by the edge for its fallback. One loop, one thread.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/http/connection.h"
#include "common/http/message.h"
#include "common/http/parser.h"
#include "common/net/loop.h"
#include "common/tls/tls.h"

namespace coilgun::http {

class ClientHandler {
 public:
  virtual ~ClientHandler() = default;
  // An interim response (1xx other than 101: 100 Continue, 103 Early Hints); the final one
  // follows.
  virtual void on_interim(ResponseHead&& head) { (void)head; }
  // The final response head. A 101 to a request that asked for an upgrade switches the
  // connection (see ClientConnection); a 101 to any other request is an error (on_error).
  virtual void on_response_head(ResponseHead&& head) = 0;
  // Body bytes, de-chunked (valid during the call); after a 101, the new protocol's bytes.
  virtual void on_response_body(std::span<const uint8_t> data) = 0;
  // The response is complete; after a 101, the backend half-closed (FIN).
  virtual void on_response_end() = 0;
  // The exchange failed: connection refused or reset, malformed response. Called at most
  // once; nothing follows it.
  virtual void on_error(Status status) = 0;
  // The request body may continue (the write queue drained).
  virtual void on_writable() {}
};

// One keep-alive connection to a backend.
//
// Reuse (issue #9): a connection carries another request only when it is clean, that is
//   * its last response is complete, nothing followed it in the same read, and the backend did
//     not ask to close (Connection: close, a close-delimited body, a 204 that announced a body);
//   * the request was sent whole, and it was not one whose body the backend may have ignored
//     (a body on a method other than POST, PUT or PATCH: such a request is sent with
//     "Connection: close", see carries_ignorable_body());
//   * reading is on again (a response body paused for back-pressure is over), so a stray byte or
//     the backend's close is seen at once while the connection waits in the pool.
// Bytes that arrive between exchanges close it, and ClientPool::acquire() peeks at the socket
// before handing an idle one out (TcpStream::quiet()). A stray answer can then never be read as
// the answer to another client's request.
//
// Upgrades (RFC 9110 §7.8): a request that carries an Upgrade field asks for one. A 101 that
// names no protocol the request listed is an error, like a 101 to a request without Upgrade.
// If the answer is such a 101, the connection stops being HTTP: bytes after the 101's head, in the
// same read or later, go to on_response_body as they come (pause_reading paces them), send_body
// writes bytes as they are, send_end half-closes (FIN), and the backend's FIN is on_response_end.
// Such a connection is never reused.
//
// The client side of a Connection (connection.h): it writes requests and reads responses.
class ClientConnection : public Connection {
 public:
  ClientConnection(std::unique_ptr<uv::TcpStream> socket, Parser::Limits limits);
  ~ClientConnection() override;

  // Starts an exchange: writes |head| (Content-Length or Transfer-Encoding as |framing| says)
  // and reports the response to |handler|, which must stay valid until on_response_end or
  // on_error, or until this connection is destroyed. Requires no exchange in progress. An error
  // means the exchange did not start, and |handler| hears nothing (not even of a write that
  // failed inside the call: the connection is then failed, and the error only returned).
  Status send_request(RequestHead head, BodyFraming framing, uint64_t length,
                      ClientHandler* handler);
  // Writes request body bytes (chunked when so framed; after a 101, as they are). Does nothing
  // once the connection failed or was detached. A write that fails is reported to the handler
  // as on_error, from inside this call: the caller must not assume the exchange still runs.
  void send_body(std::span<const uint8_t> data);
  // Ends the request body (the last chunk when chunked; after a 101, a FIN). Failures reach the
  // handler as with send_body.
  void send_end();
  bool writable() const { return socket_->write_queue_bytes() < (1u << 20); }

  // Backpressure on the response body. Reading always resumes once the response is complete.
  void pause_reading();
  void resume_reading();

  // True once the last response completed and the connection may carry another request (see
  // the class comment).
  bool reusable() const;
  // True when it came from the pool's idle list.
  bool reused() const { return reused_; }
  // True if the failed exchange may be sent again on a fresh connection: the connection came
  // from the pool (the backend may just have closed it meanwhile), not one byte of a response
  // arrived, and the request was safe (RFC 9110 §9.2.1: GET, HEAD, OPTIONS, TRACE) without a
  // body. RFC 9110 §9.2.2 also calls PUT and DELETE idempotent, but a second run of them can
  // still be observed (a 404 for the second DELETE, audit trails): only safe requests are
  // replayed (Pingora's rule for reused connections, narrowed to safe methods).
  bool retryable() const { return reused_ && response_bytes_ == 0 && safe_request_; }
  // Stops reporting to the handler (the exchange was abandoned); the connection is not
  // reusable afterwards.
  void detach();

  // True if a request with method |method| and a body may leave that body unread by the
  // backend, so that the body would be parsed as the next request on the connection: a body
  // on any method but POST, PUT and PATCH. GET, HEAD, DELETE and OPTIONS bodies have no
  // defined semantics (RFC 9110 §9.3) and servers such as Python's http.server skip them;
  // unknown methods may be refused without reading the body.
  static bool carries_ignorable_body(std::string_view method, BodyFraming framing, uint64_t length);

 private:
  friend class ClientPool;
  // Where the connection is between exchanges.
  enum class State : uint8_t {
    kReady,     // New, or idle: may take a request.
    kExchange,  // A request was sent; its final response is not complete.
    kDone,      // The response is complete; waiting to go back to the pool (or away).
    kUpgraded,  // A 101 switched protocols: a byte pipe until either side closes.
  };
  // Parser events (Connection is the parser's handler). The handler hears of the end from
  // feed_responses() (or on_eof()), once the bytes after it are known.
  void on_response_head(ResponseHead&& head) override;
  void on_body(std::span<const uint8_t> data) override;
  void on_message_complete() override;
  void on_read(std::span<const uint8_t> data) override;
  void on_eof() override;
  void on_error(Status status) override;
  void on_drained() override;
  void fail(Status status);
  void feed_responses();
  void pass_upgraded();
  void finish_response();

  ClientHandler* handler_ = nullptr;
  BodyFraming request_framing_ = BodyFraming::kNone;
  State state_ = State::kReady;
  uint64_t response_bytes_ = 0;  // Bytes read since the request was sent.
  bool keep_alive_ = false;      // The last response lets the connection stay open.
  bool close_after_ = false;     // The request's body may have been left unread.
  bool safe_request_ = false;
  std::string upgrade_asked_;  // The request's Upgrade field: what a 101 may switch to.
  bool interim_ = false;       // The message being parsed is an interim response.
  bool unasked_101_ = false;   // A 101 named no protocol the request asked for.
  bool complete_ = false;      // The final response is complete.
  bool reused_ = false;
  bool request_complete_ = false;
  bool failed_ = false;
  bool idle_ = false;  // In the pool's idle list.
  class ClientPool* pool_ = nullptr;
  uint64_t tls_generation_ = 0;  // The pool's, when this connection was made.
};

// Idle connections to one backend, and new ones on demand.
class ClientPool {
 public:
  using OnAcquire = std::function<void(Result<std::unique_ptr<ClientConnection>>)>;

  ClientPool(uv::Loop& loop, std::string host, uint16_t port, size_t max_idle,
             std::chrono::milliseconds connect_timeout, Parser::Limits limits);
  ~ClientPool();

  // New connections speak TLS with |tls| (a tls::TlsContext::web_client(): the server's
  // certificate must carry |name|, sent as SNI unless an IP address; empty: the pool's host),
  // or plain HTTP while no context was ever set (the default). Idle connections made with
  // another context or name are dropped, and connections made with one are not taken back. A
  // null |tls| after a context is ignored: a pool that spoke TLS never goes back to cleartext.
  void set_tls(std::shared_ptr<const tls::TlsContext> tls, std::string name = "");

  // Hands over an idle connection (at once) or a new one (when connected). An idle one is
  // handed out only if its socket is quiet (nothing unread, no close): the others are dropped.
  // |fresh| skips the idle ones. |done| runs exactly once unless the pool is destroyed first.
  void acquire(OnAcquire done, bool fresh = false);
  // Takes back a connection whose exchange is over: kept if reusable() and there is room.
  void release(std::unique_ptr<ClientConnection> c);
  size_t idle() const { return idle_.size(); }

 private:
  friend class ClientConnection;
  void drop_idle(ClientConnection* c);

  uv::Loop& loop_;
  std::string host_;
  uint16_t port_;
  size_t max_idle_;
  std::chrono::milliseconds connect_timeout_;
  Parser::Limits limits_;
  std::shared_ptr<const tls::TlsContext> tls_;
  std::string tls_name_;         // The name the server's certificate must carry ("": host_).
  uint64_t tls_generation_ = 0;  // Counts set_tls() changes.
  std::vector<std::unique_ptr<ClientConnection>> idle_;
  std::vector<std::unique_ptr<uv::TcpConnector>> connecting_;
};

}  // namespace coilgun::http
