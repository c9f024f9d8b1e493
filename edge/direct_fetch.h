#pragma once
// A request sent straight to its route's fallback URL (issue #12 §3): when none of a route's
// agents has a tunnel up, the edge forwards the request to the origin itself over HTTP/1.1, as
// a plain reverse proxy, and only the compression is lost. DirectFetch is the backend half of
// such an exchange: it takes a connection from the worker's pool for that URL, sends the
// request, passes its body on as the client sends it, and reports the response to its Sink
// (the ClientExchange, which writes it to the client).
//
// A reused keep-alive connection the backend had closed is retried once on a fresh one, under
// ClientConnection::retryable()'s rules (a safe request without a body, not one response byte
// read), as the agent does for its backend.
//
// Ownership: owned by its Sink's exchange. abandon() (or destruction) stops it: the connection
// is detached and deleted on a later loop turn, never reused, so either may be called from
// inside a Sink call. The pool (EdgeWorker::direct_pool) outlives every DirectFetch.
// Threads: its worker's loop.

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "common/http/client.h"
#include "common/net/loop.h"

namespace coilgun::edge {

class DirectFetch : private http::ClientHandler {
 public:
  // What the exchange hears. Nothing follows direct_end() or direct_failed(); after either
  // (or abandon()) no other call comes.
  class Sink {
   public:
    virtual void direct_interim(http::ResponseHead&& head) = 0;  // A 1xx other than 101.
    virtual void direct_head(http::ResponseHead&& head) = 0;
    virtual void direct_body(std::span<const uint8_t> data) = 0;
    virtual void direct_end() = 0;
    // |detail|: what TLS knows beyond |why| (OpenSSL's reason, the certificate's error and
    // names), or "".
    virtual void direct_failed(Status why, std::string detail) = 0;
    // writable() turned true: the client's body may be read again.
    virtual void direct_writable() = 0;

   protected:
    ~Sink() = default;
  };

  // Will send |head| framed as |framing| says (|length| for Content-Length).
  DirectFetch(uv::Loop& loop, http::ClientPool& pool, Sink& sink, http::RequestHead head,
              http::BodyFraming framing, uint64_t length);
  // Takes a connection and sends the request. |sink| may hear from inside this call (an idle
  // connection whose write fails), so the owner calls it once it holds this fetch.
  void start() { acquire(false); }
  ~DirectFetch() override;
  DirectFetch(const DirectFetch&) = delete;
  DirectFetch& operator=(const DirectFetch&) = delete;

  // Request body bytes, sent as they come (held until the connection is there).
  void send_body(std::span<const uint8_t> data);
  // The request body is complete. Once only.
  void send_end();
  // False while the backend (or the wait for its connection) holds more than the client
  // should send ahead: the exchange stops reading the client until direct_writable().
  bool writable() const;
  // Back-pressure on the response: the client cannot take more now.
  void pause_reading();
  void resume_reading();
  // Stops: nothing more reaches the sink.
  void abandon();

 private:
  void acquire(bool fresh);
  void send_request();
  void drop_connection();
  // http::ClientHandler
  void on_interim(http::ResponseHead&& head) override;
  void on_response_head(http::ResponseHead&& head) override;
  void on_response_body(std::span<const uint8_t> data) override;
  void on_response_end() override;
  void on_error(Status status) override;
  void on_writable() override;

  uv::Loop& loop_;
  http::ClientPool& pool_;
  Sink* sink_;  // Null once abandoned or over.
  http::RequestHead head_;
  http::BodyFraming framing_;
  uint64_t length_;
  std::unique_ptr<http::ClientConnection> conn_;
  std::vector<uint8_t> early_body_;  // Body that came before the connection.
  bool body_done_ = false;           // send_end() was called.
  bool retried_ = false;
  bool paused_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);  // For acquire()'s callback.
};

}  // namespace coilgun::edge
