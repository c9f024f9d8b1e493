#include "edge/direct_fetch.h"

#include <utility>

namespace coilgun::edge {
namespace {

// Request body the client may send ahead of the backend (while connecting, or into a full
// socket) before its reading pauses.
constexpr size_t kAheadBytes = 256 * 1024;

}  // namespace

DirectFetch::DirectFetch(uv::Loop& loop, http::ClientPool& pool, Sink& sink, http::RequestHead head,
                         http::BodyFraming framing, uint64_t length)
    : loop_(loop),
      pool_(pool),
      sink_(&sink),
      head_(std::move(head)),
      framing_(framing),
      length_(length) {}

DirectFetch::~DirectFetch() { abandon(); }

void DirectFetch::acquire(bool fresh) {
  // The pool may hand a connection over after this fetch is gone: it then goes back.
  http::ClientPool& pool = pool_;
  pool_.acquire(
      [this, &pool, alive = alive_](Result<std::unique_ptr<http::ClientConnection>> r) {
        if (!*alive || sink_ == nullptr) {
          if (r.ok()) pool.release(std::move(r.value()));
          return;
        }
        if (!r.ok()) return on_error(r.status());
        conn_ = std::move(r.value());
        send_request();
      },
      fresh);
}

void DirectFetch::send_request() {
  // A copy: a retry sends the same head again. An error is returned, not reported.
  const Status s = conn_->send_request(head_, framing_, length_, this);
  if (!s.ok()) return on_error(s);
  if (paused_) conn_->pause_reading();
  // A failed write reaches on_error() inside send_body/send_end, which may end this fetch.
  if (!early_body_.empty()) {
    std::vector<uint8_t> early;
    early.swap(early_body_);
    conn_->send_body(early);
    if (!conn_ || sink_ == nullptr) return;
  }
  if (body_done_) conn_->send_end();
  if (conn_ && sink_ != nullptr && conn_->writable()) sink_->direct_writable();
}

void DirectFetch::send_body(std::span<const uint8_t> data) {
  if (sink_ == nullptr || data.empty()) return;
  if (!conn_) {
    early_body_.insert(early_body_.end(), data.begin(), data.end());
    return;
  }
  conn_->send_body(data);
}

void DirectFetch::send_end() {
  if (sink_ == nullptr || body_done_) return;
  body_done_ = true;
  if (conn_) conn_->send_end();
}

bool DirectFetch::writable() const {
  return conn_ ? conn_->writable() : early_body_.size() < kAheadBytes;
}

void DirectFetch::pause_reading() {
  paused_ = true;
  if (conn_) conn_->pause_reading();
}

void DirectFetch::resume_reading() {
  if (!paused_) return;
  paused_ = false;
  if (conn_) conn_->resume_reading();
}

void DirectFetch::abandon() {
  sink_ = nullptr;
  *alive_ = false;
  drop_connection();
}

void DirectFetch::drop_connection() {
  if (!conn_) return;
  conn_->detach();  // Mid-exchange: never reused.
  loop_.defer_delete(std::move(conn_));
}

void DirectFetch::on_interim(http::ResponseHead&& head) {
  if (sink_ != nullptr) sink_->direct_interim(std::move(head));
}

void DirectFetch::on_response_head(http::ResponseHead&& head) {
  if (sink_ != nullptr) sink_->direct_head(std::move(head));
}

void DirectFetch::on_response_body(std::span<const uint8_t> data) {
  if (sink_ != nullptr) sink_->direct_body(data);
}

void DirectFetch::on_response_end() {
  Sink* sink = sink_;
  sink_ = nullptr;
  pool_.release(std::move(conn_));          // Kept for the next request if it is clean.
  if (sink != nullptr) sink->direct_end();  // Last: it may destroy this fetch.
}

void DirectFetch::on_error(Status status) {
  // A keep-alive connection the backend closed meanwhile: once more on a fresh one.
  if (conn_ && conn_->retryable() && !retried_) {
    retried_ = true;
    drop_connection();
    return acquire(true);
  }
  std::string detail = conn_ ? conn_->error_detail() : std::string();
  drop_connection();
  Sink* sink = sink_;
  sink_ = nullptr;
  if (sink != nullptr) sink->direct_failed(std::move(status), std::move(detail));  // Last.
}

void DirectFetch::on_writable() {
  if (sink_ != nullptr) sink_->direct_writable();
}

}  // namespace coilgun::edge
