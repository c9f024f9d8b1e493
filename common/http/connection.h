#pragma once
// What a server's and a client's HTTP/1.1 connection share (Envoy's ConnectionImpl, in
// source/common/http/http1/codec_impl.h, has the same place above its ServerConnectionImpl and
// ClientConnectionImpl): the socket, the parser whose events it receives, and the bytes read
// that the parser has not taken yet. ServerConnection (server.h) and ClientConnection
// (client.h) build their exchanges on it; what differs between them (timeouts, the pool,
// answering errors, closing) stays with them.
//
// The read loop it serves: on_read() buffers the bytes (buffer()), the derived class feeds them
// (feed_pending()) as long as it wants the next message, pausing the socket for back-pressure
// (pause_socket(), unpause_socket()); after a 101 the bytes are no longer HTTP and go on as
// they are (take_pending()).
//
// One loop, one thread: everything here runs on the connection's loop thread.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "common/http/message.h"
#include "common/http/parser.h"
#include "common/net/loop.h"
#include "proto/status.h"

namespace coilgun::http {

class Connection : public uv::TcpStream::Handler, public uv::Deferred, protected Parser::Handler {
 public:
  ~Connection() override;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Bytes written and not yet handed to the kernel.
  size_t write_queue_bytes() const { return socket_->write_queue_bytes(); }
  // What the socket's filter knows of a failure beyond its Status (uv::TcpStream).
  std::string error_detail() const { return socket_->error_detail(); }

 protected:
  // Takes |socket| (reporting its events to this connection, Nagle off) and makes a parser of
  // messages of |mode| within |limits| that reports its events to this connection. Does not
  // start reading.
  Connection(std::unique_ptr<uv::TcpStream> socket, Parser::Mode mode, Parser::Limits limits);

  // Keeps bytes read until the parser (or, after a 101, the handler) takes them.
  void buffer(std::span<const uint8_t> data) {
    pending_.insert(pending_.end(), data.begin(), data.end());
  }

  // Feeds the pending bytes to the parser once (its events run inside) and drops the ones it
  // consumed; the result is the parser's. Requires !parser_->paused().
  Result<size_t> feed_pending();

  // After a 101: moves the pending bytes into |out| (replacing what it held) unless reading is
  // paused. False, leaving |out| alone, when there is nothing to hand on or reading is paused.
  bool take_pending(std::vector<uint8_t>& out);

  // Back-pressure: stops reading the socket until unpause_socket(). unpause_socket() returns
  // false, doing nothing, when reading was not paused; otherwise it clears the pause and leaves
  // starting the socket to the caller (which may have reasons not to).
  void pause_socket();
  bool unpause_socket();
  bool reading_paused() const { return reading_paused_; }

  std::unique_ptr<uv::TcpStream> socket_;
  std::unique_ptr<Parser> parser_;
  std::vector<uint8_t> pending_;  // Bytes read that nobody has taken yet.
  bool eof_ = false;              // The peer's FIN came (as far as the derived class notes it).

 private:
  bool reading_paused_ = false;
};

}  // namespace coilgun::http
