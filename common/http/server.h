#pragma once
// Serves HTTP/1.1 on accepted connections (the edge's client listener, admin listeners, test
// fixtures). One ServerConnection per client socket; requests are handled one at a time, so
// pipelined requests are answered in order (the parser pauses after each and resumes when its
// response is complete). A request the parser refuses gets http::error_status() (400, 414,
// 431 or 501) and a close.
//
// A Handler drives exchanges: it hears about each request head and body, and answers through
// the connection's respond_* methods, from inside the callback or later (the exchange stays
// open until respond_end). A handler that keeps state per exchange hands it to the connection
// as a ServerExchange (set_exchange), which then hears that exchange's events and is owned by
// the connection. Everything runs on the connection's loop thread.
//
// Failures of the connection (the client went away, a write failed) are not returned by the
// respond_* calls: they reach the handler, or the exchange's object, as on_abort, possibly from
// inside the respond_* call that hit them.
//
// Upgrades (RFC 9110 §7.8; WebSocket is one). A request asks for one (upgrade_requested())
// when it is HTTP/1.1, has no body, carries Upgrade and lists "upgrade" in Connection; the
// Upgrade field stays in request() for the handler to pass on. The handler answers it like any
// other request; the response's Upgrade field is kept, with "upgrade" in Connection (a 426 or a
// refusal says what the server wants). A 101 answer switches the connection: respond_head
// writes it without framing, and from then the connection is a byte pipe. What the client sends
// goes to on_upgraded_data (paced by pause_reading), its FIN to on_upgraded_end; respond_body
// writes bytes as they are; respond_end closes the connection once they are written. Bytes the
// client sent after the request and before the answer are held: with a 101 they are the new
// protocol's first bytes, otherwise the next request.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "common/http/connection.h"
#include "common/http/message.h"
#include "common/http/parser.h"
#include "common/net/loop.h"

namespace coilgun::http {

class ServerConnection;

struct ServerOptions {
  Parser::Limits limits;
  std::chrono::milliseconds idle_timeout{60000};  // No exchange open and nothing received.
  // A request head not complete this long after its first byte: 408 and close (slowloris;
  // nginx's client_header_timeout). The deadline does not move as bytes dribble in.
  std::chrono::milliseconds header_timeout{10000};
  // No byte of a request body for this long while reading it (not while the handler paused
  // reading): 408 and close (nginx's client_body_timeout).
  std::chrono::milliseconds body_timeout{60000};
  // Server: connections open at once; one more is closed as it is accepted (0: no cap).
  size_t max_connections = 0;
  size_t high_watermark = 1 << 20;                // Write queue above this: not writable().
  size_t low_watermark = 256 * 1024;              // Drained below this: on_writable().
  std::string server_name;  // Server field on error responses it writes itself.
};

// The state of one exchange that a handler hands to its connection (ServerConnection::
// set_exchange, from inside on_request). The connection then reports that exchange's events
// here, instead of to the handler's methods of the same names.
//
// Ownership (Envoy's DeferredDeletable): the connection owns it from set_exchange until the
// exchange is over (its response complete and its request read, or on_abort), then hands it to
// the loop, which deletes it on a later turn (uv::Loop::defer_delete). So an exchange may end
// from inside one of its own calls, and it stays valid until the current callback returns. It
// may receive events after it considers itself finished (an early answer, before the rest of
// the request was read): each method must then do nothing. Threads: the connection's loop.
class ServerExchange : public uv::Deferred {
 public:
  // Bytes of the request body (valid during the call).
  virtual void on_request_body(std::span<const uint8_t> /*data*/) {}
  // The request (head and body) is complete.
  virtual void on_request_end() {}
  // The exchange ended without a complete response: the client went away, or the connection
  // failed. respond_* calls no longer do anything. Nothing follows it.
  virtual void on_abort() {}
  // The write queue drained below the low watermark.
  virtual void on_writable() {}
  // After a 101: bytes from the client (valid during the call).
  virtual void on_upgraded_data(std::span<const uint8_t> /*data*/) {}
  // After a 101: the client will send nothing more (it half-closed).
  virtual void on_upgraded_end() {}
};

class ServerHandler {
 public:
  virtual ~ServerHandler() = default;
  // A request head arrived (c.request()): an exchange begins. Answer with c.respond_*(), or
  // hand the exchange's state to c.set_exchange(), which then hears the events below in the
  // handler's place.
  virtual void on_request(ServerConnection& c) = 0;
  // Bytes of the request body (valid during the call).
  virtual void on_request_body(ServerConnection& c, std::span<const uint8_t> data) {
    (void)c, (void)data;
  }
  // The request (head and body) is complete.
  virtual void on_request_end(ServerConnection& c) { (void)c; }
  // The exchange ended without a complete response: the client went away, or the connection
  // failed. The handler drops its exchange state; respond_* calls no longer do anything.
  virtual void on_abort(ServerConnection& c) { (void)c; }
  // The write queue drained below the low watermark.
  virtual void on_writable(ServerConnection& c) { (void)c; }
  // After a 101: bytes from the client (valid during the call).
  virtual void on_upgraded_data(ServerConnection& c, std::span<const uint8_t> data) {
    (void)c, (void)data;
  }
  // After a 101: the client will send nothing more (it half-closed).
  virtual void on_upgraded_end(ServerConnection& c) { (void)c; }
  // The connection is gone; the handler owns it and deletes it (on a later turn when inside
  // a callback: Loop::defer_delete). No other call follows.
  virtual void on_closed(ServerConnection& c) = 0;
};

// How the response body is framed on the wire.
enum class ResponseFraming : uint8_t {
  kNone,           // No body (HEAD, 204, 304, or an empty one): Content-Length as given.
  kContentLength,  // Exactly the length given.
  kChunked,        // Chunked (HTTP/1.1 clients); HTTP/1.0 clients get kUntilClose instead.
  kUntilClose,     // The body ends when the connection closes.
};

// The server side of a Connection (connection.h): it reads requests and writes responses.
class ServerConnection : public Connection {
 public:
  ServerConnection(uv::Loop& loop, std::unique_ptr<uv::TcpStream> socket, ServerHandler& handler,
                   const ServerOptions& options);
  ~ServerConnection() override;

  // The current request (valid from on_request until the next one begins).
  const RequestHead& request() const { return request_; }
  RequestHead& request() { return request_; }
  bool in_exchange() const { return in_exchange_; }
  // The current request asks to switch protocols (see the file comment).
  bool upgrade_requested() const { return upgrade_requested_; }
  // The client's IP address (asked of the kernel once per connection).
  const std::string& peer_ip();

  // Hands the current exchange's state to this connection, which reports the exchange's events
  // to it from now on and owns it (see ServerExchange). Call from on_request, at most once per
  // exchange; requires an exchange in progress. Returns the object, which stays valid until the
  // loop turn after the exchange ends.
  template <typename T>
  requires std::is_base_of_v<ServerExchange, T> T& set_exchange(std::unique_ptr<T> exchange) {
    T& ref = *exchange;
    exchange_ = std::move(exchange);
    return ref;
  }

  // Sends "100 Continue" (for a request with Expect: 100-continue that will be served).
  void send_continue();
  // Sends an interim response (1xx other than 101, e.g. 103 Early Hints) before the final one,
  // hop-by-hop fields removed. Interim responses are advisory (RFC 9110 §15.2), so nothing is
  // sent, and nothing is reported, to an HTTP/1.0 client, once the final head is out or the
  // exchange is over, or when |head| is not an interim response or holds a field that cannot be
  // written: the final response follows in any case.
  void send_interim(ResponseHead head);
  // Writes the response head (a 101 switches protocols: see the file comment). With
  // kContentLength, |length| is the body length (a Content-Length field is set); with kChunked,
  // Transfer-Encoding is set; hop-by-hop fields in |head| are removed first. For a HEAD request
  // nothing follows the head whatever |framing|. An error means nothing was written and the
  // exchange is still open: the exchange is over (kClosed), a head was already written, or
  // |head| cannot be written (a 101 for a protocol the request did not ask for, a field that is
  // not valid HTTP/1.1). The caller then answers otherwise (respond_simple) or closes.
  Status respond_head(ResponseHead head, ResponseFraming framing, uint64_t length = 0);
  // Writes body bytes (chunked when so framed). Requires a head written by respond_head. Does
  // nothing once the exchange is over; a write that fails closes the connection, and the
  // handler hears of it as on_abort (perhaps from inside this call).
  void respond_body(std::span<const uint8_t> data);
  // Ends the response (the last chunk when chunked). Requires a head written by respond_head.
  // The next pipelined request, if any, is handled afterwards (perhaps from inside this call).
  // Failures reach the handler as on_abort, as with respond_body.
  void respond_end();
  // Ends the response like respond_end, with |trailers| after the last chunk when chunked (other
  // framings have no place for them and drop them). An error (kMalformed: a field that is not
  // valid HTTP/1.1) means nothing was written and the exchange is still open: the caller ends it
  // otherwise, or closes.
  Status respond_end(std::span<const Header> trailers);
  // A complete response with a short text body, for errors and simple endpoints. |close|
  // closes the connection after it.
  void respond_simple(int status, std::string_view body, bool close = false,
                      std::string_view content_type = "text/plain; charset=utf-8");

  // Backpressure on the response: false while the write queue is above the high watermark.
  bool writable() const;
  // Backpressure on the request body.
  void pause_reading();
  void resume_reading();
  // Closes now (an exchange in progress is aborted first).
  void close();

 private:
  // Parser events (Connection is the parser's handler).
  void on_request_head(RequestHead&& head) override;
  void on_body(std::span<const uint8_t> data) override;
  void on_message_complete() override;
  void on_read(std::span<const uint8_t> data) override;
  void on_eof() override;
  void on_error(Status status) override;
  void on_drained() override;
  void process();
  void abort_exchange();
  void release_exchange();
  void fail_request(const Status& s);
  void finish_exchange();
  void end_exchange();
  void arm_idle();
  void start_head_deadline();
  void arm_body_deadline();
  void time_out();
  void write(std::vector<uint8_t>&& bytes);
  void keep_upgrade_fields(ResponseHead& head, std::optional<std::string> upgrade);
  void pass_upgraded();

  uv::Loop& loop_;
  std::optional<std::string> peer_ip_;
  ServerHandler& handler_;
  // The current exchange's own state, if the handler set one (set_exchange).
  std::unique_ptr<ServerExchange> exchange_;
  ServerOptions options_;
  uv::Timer idle_;
  RequestHead request_;
  bool in_exchange_ = false;
  bool request_done_ = false;
  bool response_started_ = false;
  bool response_done_ = false;
  bool in_feed_ = false;  // Inside parser_->feed(): callbacks must not feed or resume it.
  bool head_request_ = false;
  bool close_after_ = false;
  bool closed_ = false;
  bool closing_ = false;  // The last response is queued; close() follows next turn.
  bool was_unwritable_ = false;
  bool upgrade_requested_ = false;
  bool head_started_ = false;  // Bytes of the next request head came: its deadline runs.
  bool upgraded_ = false;      // A 101 went out: the connection is a byte pipe.
  bool upgraded_end_ = false;  // on_upgraded_end was reported.
  ResponseFraming framing_ = ResponseFraming::kNone;
};

// Accepts connections and gives each a ServerConnection that it owns and frees.
class Server : public ServerHandler {
 public:
  Server(uv::Loop& loop, ServerOptions options);
  ~Server() override;

  // As uv::TcpListener::listen.
  Status listen(const std::string& host, uint16_t port,
                uv::PortSharing sharing = uv::PortSharing::kNone);
  uint16_t port() const { return listener_.port(); }
  std::string address() const { return listener_.address(); }
  // Stops accepting; open connections go on until they end.
  void stop_accepting() { listener_.close(); }
  // Closes every connection now.
  void close_all();
  size_t connections() const { return open_.size(); }
  // A connection was closed at accept: max_connections were open.
  virtual void on_connection_refused() {}

  void on_closed(ServerConnection& c) override;

 protected:
  uv::Loop& loop_;

 private:
  ServerOptions options_;
  uv::TcpListener listener_;
  // Owned here until on_closed() hands each to the loop to delete (Loop::defer_delete).
  std::unordered_map<ServerConnection*, std::unique_ptr<ServerConnection>> open_;
};

}  // namespace coilgun::http
