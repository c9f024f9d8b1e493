#pragma once
// HTTP/1.1 to a backend: one request at a time per connection, and a pool of idle keep-alive
// connections per backend (per loop). Used by the origin agent. One loop, one thread.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/http.h"
#include "common/uv.h"

namespace coilgun::http {

class ClientHandler {
 public:
  virtual ~ClientHandler() = default;
  // The final response head (interim 1xx responses are consumed; a 100 Continue is reported
  // through on_continue).
  virtual void on_response_head(ResponseHead&& head) = 0;
  // Body bytes, de-chunked (valid during the call).
  virtual void on_response_body(std::span<const uint8_t> data) = 0;
  // The response is complete.
  virtual void on_response_end() = 0;
  // The exchange failed: connection refused or reset, malformed response. Called at most
  // once; nothing follows it.
  virtual void on_error(Status status) = 0;
  virtual void on_continue() {}
  // The request body may continue (the write queue drained).
  virtual void on_writable() {}
};

class ClientConnection : public uv::TcpStream::Handler, public uv::Deferred {
 public:
  ClientConnection(std::unique_ptr<uv::TcpStream> socket, Parser::Limits limits);
  ~ClientConnection() override;

  // Starts an exchange: writes |head| (Content-Length or Transfer-Encoding as |framing| says)
  // and reports the response to |handler|, which must stay valid until on_response_end or
  // on_error, or until this connection is destroyed.
  Status send_request(RequestHead head, BodyFraming framing, uint64_t length,
                      ClientHandler* handler);
  Status send_body(std::span<const uint8_t> data);
  Status send_end();
  bool writable() const { return socket_->write_queue_bytes() < (1u << 20); }

  // Backpressure on the response body.
  void pause_reading();
  void resume_reading();

  // True once the last response completed and the connection may carry another request.
  bool reusable() const { return reusable_; }
  // True when it came from the pool's idle list (a failure before any response byte may just
  // mean the backend closed it meanwhile: worth one retry on a fresh connection).
  bool reused() const { return reused_; }
  bool response_started() const { return response_started_; }
  // Stops reporting to the handler (the exchange was abandoned); the connection is not
  // reusable afterwards.
  void detach();

 private:
  friend class ClientPool;
  class ParserEvents;
  void on_read(std::span<const uint8_t> data) override;
  void on_eof() override;
  void on_error(Status status) override;
  void on_drained() override;
  void fail(Status status);
  void feed_pending();

  std::unique_ptr<uv::TcpStream> socket_;
  std::unique_ptr<ParserEvents> events_;
  std::unique_ptr<Parser> parser_;
  ClientHandler* handler_ = nullptr;
  std::vector<uint8_t> pending_;
  BodyFraming request_framing_ = BodyFraming::kNone;
  bool reusable_ = false;
  bool reused_ = false;
  bool request_complete_ = false;
  bool response_started_ = false;
  bool failed_ = false;
  bool paused_ = false;
  bool idle_ = false;  // In the pool's idle list.
  class ClientPool* pool_ = nullptr;
};

// Idle connections to one backend, and new ones on demand.
class ClientPool {
 public:
  using OnAcquire = std::function<void(Result<std::unique_ptr<ClientConnection>>)>;

  ClientPool(uv::Loop& loop, std::string host, uint16_t port, size_t max_idle,
             std::chrono::milliseconds connect_timeout, Parser::Limits limits);
  ~ClientPool();

  // Hands over an idle connection (at once) or a new one (when connected). |fresh| skips the
  // idle ones. |done| runs exactly once unless the pool is destroyed first.
  void acquire(OnAcquire done, bool fresh = false);
  // Takes back a connection whose exchange is over: kept if reusable and there is room.
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
  std::vector<std::unique_ptr<ClientConnection>> idle_;
  std::vector<std::unique_ptr<uv::TcpConnector>> connecting_;
};

}  // namespace coilgun::http
