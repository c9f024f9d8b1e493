#pragma once
// Serves HTTP/1.1 on accepted connections (the edge's client listener, admin listeners, test
// fixtures). One ServerConnection per client socket; requests are handled one at a time, so
// pipelined requests are answered in order (the parser pauses after each and resumes when its
// response is complete). A request the parser refuses gets http::error_status() (400, 414,
// 431 or 501) and a close.
//
// A Handler drives exchanges: it hears about each request head and body, and answers through
// the connection's respond_* methods, from inside the callback or later (the exchange stays
// open until respond_end). Everything runs on the connection's loop thread.
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

class ServerHandler {
 public:
  virtual ~ServerHandler() = default;
  // A request head arrived (c.request()): an exchange begins. Answer with c.respond_*().
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
  // Per-exchange state the handler may hang on the connection (not owned).
  void* exchange_data = nullptr;

  // Sends "100 Continue" (for a request with Expect: 100-continue that will be served).
  void send_continue();
  // Sends an interim response (1xx other than 101, e.g. 103 Early Hints) before the final one,
  // hop-by-hop fields removed. Nothing is sent to an HTTP/1.0 client (RFC 9110 §15.2) or once
  // the final head is out.
  Status send_interim(ResponseHead head);
  // Writes the response head (a 101 switches protocols: see the file comment). With kContentLength, |length| is the body length (a
  // Content-Length field is set); with kChunked, Transfer-Encoding is set; hop-by-hop fields in
  // |head| are removed first. For a HEAD request nothing follows the head whatever |framing|.
  Status respond_head(ResponseHead head, ResponseFraming framing, uint64_t length = 0);
  // Writes body bytes (chunked when so framed).
  Status respond_body(std::span<const uint8_t> data);
  // Ends the response (the last chunk, with |trailers| when chunked). The next pipelined
  // request, if any, is handled afterwards.
  Status respond_end(std::span<const Header> trailers = {});
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

  Status listen(const std::string& host, uint16_t port);
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
