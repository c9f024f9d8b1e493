#include "common/http/connection.h"

namespace coilgun::http {

Connection::Connection(std::unique_ptr<uv::TcpStream> socket, Parser::Mode mode,
                       Parser::Limits limits)
    : socket_(std::move(socket)),
      parser_(std::make_unique<Parser>(mode, static_cast<Parser::Handler&>(*this), limits)) {
  socket_->set_handler(this);
  socket_->set_nodelay(true);
}

Connection::~Connection() = default;

Result<size_t> Connection::feed_pending() {
  Result<size_t> r = parser_->feed(pending_);
  if (r.ok()) pending_.erase(pending_.begin(), pending_.begin() + static_cast<long>(*r));
  return r;
}

bool Connection::take_pending(std::vector<uint8_t>& out) {
  if (pending_.empty() || reading_paused_) return false;
  out.clear();
  out.swap(pending_);
  return true;
}

void Connection::pause_socket() {
  reading_paused_ = true;
  socket_->stop_read();
}

bool Connection::unpause_socket() {
  if (!reading_paused_) return false;
  reading_paused_ = false;
  return true;
}

}  // namespace coilgun::http
