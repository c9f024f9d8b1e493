#include "origin/exchange.h"

#include <algorithm>
#include <chrono>

#include "common/obs/log.h"
#include "common/store/cache_key.h"

namespace coilgun::origin {
namespace {

using proto::BodyMode;
using proto::HeaderField;
using proto::ResetReason;

constexpr std::string_view kVia = "1.1 coilgun";

// Bodies worth a delta: text of any kind. Images, video, archives and anything already
// compressed go through as they are.
bool delta_worthy(const http::ResponseHead& head) {
  if (auto enc = http::find(head.headers, "content-encoding")) {
    if (!http::iequals(*enc, "identity")) return false;
  }
  if (http::find(head.headers, "content-range")) return false;
  if (head.status == 206) return false;
  auto ct = http::find(head.headers, "content-type");
  if (!ct) return true;  // Unknown: a poor base costs ratio, never correctness.
  const std::string t = http::to_lower(*ct);
  return t.starts_with("text/") || t.find("json") != std::string::npos ||
         t.find("javascript") != std::string::npos || t.find("xml") != std::string::npos ||
         t.find("ecmascript") != std::string::npos;
}

// Responses that must reach the client as they come, whatever their type: server-sent events
// (each event matters when it is sent), and what the backend marked unbuffered (nginx's
// "X-Accel-Buffering: no"). Returns why, for the access log, or nullptr.
const char* must_stream(const http::ResponseHead& head) {
  if (auto ct = http::find(head.headers, "content-type")) {
    if (http::to_lower(*ct).starts_with("text/event-stream")) return "event_stream";
  }
  auto buffering = http::find(head.headers, "x-accel-buffering");
  return buffering && http::iequals(*buffering, "no") ? "unbuffered" : nullptr;
}

// Interim responses (103 Early Hints, ...) passed on per exchange; more are dropped, so a backend
// cannot fill the tunnel with heads that no flow control paces.
constexpr int kMaxInterim = 8;

// Cache-Control: private or no-store (RFC 9111 §5.2.2.5, §5.2.2.7): meant for one user. Such
// responses are delta-coded like any other unless the edge's route says otherwise (":private").
bool is_private(const http::ResponseHead& head) {
  return http::has_token(head.headers, "cache-control", "private") ||
         http::has_token(head.headers, "cache-control", "no-store");
}

}  // namespace

Exchange::Exchange(EdgeLink& link, uint32_t stream, std::span<const proto::VersionId> held,
                   std::span<const HeaderField> fields, bool end_stream)
    : link_(link),
      worker_(link.worker()),
      shared_(link.worker().shared()),
      stream_(stream),
      held_(held.begin(), held.end()),
      request_end_(end_stream),
      timeout_(link.worker().loop()),
      trickle_(link.worker().loop()),
      settings_(shared_.now()) {
  auto parsed = tunnel::parse_request_fields(fields);
  malformed_ = !parsed.ok();
  tunnel::TunnelRequest& r = *parsed;
  upgrade_ = r.upgrade;
  backend_timeout_ = r.backend_timeout;
  private_deltas_ = r.private_deltas;
  host_ = http::to_lower(r.authority);
  // The cache key: this agent's namespace, the host and the target.
  key_ = CacheKey{settings_->config.namespace_name, host_, r.path}.str();
  // Only a GET's body becomes a base (PROTOCOL.md §6): only GETs take part in the policy.
  if (r.method == "GET") {
    key_hold_ = shared_.base_policy.key_started(key_, held_, worker_.loop().now_ms());
  }
  const auto cl = http::find(r.headers, "content-length");
  if (!upgrade_.empty()) {
    // No body: what the edge sends on the stream is the new protocol's, after a 101.
  } else if (!end_stream) {
    request_framing_ = cl ? http::BodyFraming::kContentLength : http::BodyFraming::kChunked;
    if (cl) {
      const std::optional<uint64_t> n = http::parse_content_length(*cl);
      bad_length_ = !n;
      request_length_ = n.value_or(0);
    }
  } else if (cl) {
    // "Content-Length: 0" is kept: a PUT of an empty file is not a PUT without a body (nginx's
    // DAV module answers 500 to the latter).
    request_framing_ = http::BodyFraming::kContentLength;
  }
  request_ = tunnel::backend_request(std::move(r));
  // Deltas must see plain bytes.
  http::set(request_.headers, "Accept-Encoding", "identity");
  http::add_via(request_.headers, kVia);
}

void Exchange::start() {
  shared_.metrics.in_flight.add(1);
  if (malformed_) return fail(ResetReason::kProtocol, "request_without_method_or_path");
  if (bad_length_) return fail(ResetReason::kProtocol, "bad_content_length");
  acquire(false);
}

void Exchange::acquire(bool fresh) {
  // The exchange may be gone when the connection comes (the edge reset the stream, the tunnel
  // closed): then nothing of it may be touched, not even its worker_ (issue #10: a crash in
  // tunnel teardown). The pool outlives every exchange.
  http::ClientPool& pool = worker_.backend();
  pool.acquire(
      [this, &pool, alive = alive_](Result<std::unique_ptr<http::ClientConnection>> r) {
        if (!*alive) {
          if (r.ok()) pool.release(std::move(r.value()));
          return;
        }
        if (finished_) return;
        if (!r.ok()) {  // Named as the edge names it, from the reason it gets.
          if (r.status().code() == Code::kTimeout) {
            return fail(ResetReason::kUpstreamTimeout, "backend_timeout");
          }
          return fail(ResetReason::kUpstreamRefused, "backend_refused");
        }
        conn_ = std::move(r.value());
        send_request();
      },
      fresh);
}

void Exchange::send_request() {
  const Status s = conn_->send_request(request_, request_framing_, request_length_, this);
  if (!s.ok()) return on_error(s);
  timeout_.start(backend_timeout_.value_or(settings_->config.backend_pool.response_timeout),
                 [this] { fail(ResetReason::kUpstreamTimeout, "backend_timeout"); });
  if (!upgrade_.empty()) return;  // The edge's bytes wait for the 101.
  // A write that fails reaches on_error() inside send_body/send_end, which may end this
  // exchange (and drop conn_) there and then.
  if (!early_body_.empty()) {
    conn_->send_body(early_body_);
    unconsumed_ += early_body_.size();
    early_body_.clear();
    if (finished_ || !conn_) return;
  }
  if (request_end_) conn_->send_end();
  if (finished_ || !conn_) return;
  on_writable();
}

void Exchange::on_request_data(std::span<const uint8_t> data, bool end_stream) {
  if (finished_) return;
  request_end_ = end_stream;
  if (!upgrade_.empty() && !switched_) {
    // Before the answer: nothing to send (the edge sends the new protocol's bytes only after the
    // 101, and ends the stream if the answer is another).
    early_body_.insert(early_body_.end(), data.begin(), data.end());
    return;
  }
  if (!conn_) {
    // Held until the backend connection is there; the stream window bounds it.
    early_body_.insert(early_body_.end(), data.begin(), data.end());
    return;
  }
  conn_->send_body(data);  // A failed write ends the exchange inside (see send_request).
  unconsumed_ += data.size();
  if (finished_ || !conn_) return;
  if (end_stream) conn_->send_end();
  if (finished_ || !conn_) return;
  on_writable();
}

void Exchange::on_writable() {
  // Request bytes the backend socket took are granted back to the edge.
  if (conn_ && conn_->writable() && unconsumed_ > 0) {
    link_.session().consume(stream_, unconsumed_);
    unconsumed_ = 0;
    link_.flush();
  }
}

// A 1xx other than 101 (ClientConnection passes no other): on to the edge, but for 100 Continue,
// which the edge sends its client itself.
void Exchange::on_interim(http::ResponseHead&& head) {
  if (head.status == 100 || interims_ >= kMaxInterim || finished_) return;
  ++interims_;
  const tunnel::FieldList fields = tunnel::response_fields(std::move(head.headers), false);
  // Interim responses are advisory (RFC 9110 §15.2): one the session refuses (fields over its
  // limits, a stream already gone) is dropped, and the final response reports a real failure.
  if (!link_.session()
           .submit_response(stream_, static_cast<uint16_t>(head.status), BodyMode::kNone,
                            fields.views(), false)
           .ok()) {
    return;
  }
  link_.flush();
}

// How the body crosses the link (mode_), and why it streams when it does (nullptr: it does not).
const char* Exchange::choose_mode(const http::ResponseHead& head) {
  const std::optional<uint64_t> cl = head.content_length;  // As the parser read it.
  const uint64_t length = cl.value_or(0);
  const char* why = nullptr;
  if (head.status == 101) {
    why = "upgrade";
  } else if (request_.method == "HEAD" || head.status == 204 || head.status == 304) {
    mode_ = Mode::kNone;
    return nullptr;
  } else if (request_.method != "GET") {
    why = "method";
  } else if (!delta_worthy(head)) {
    why = "not_text";
  } else if (const char* unbuffered = must_stream(head)) {
    why = unbuffered;
  } else if (!private_deltas_ && is_private(head)) {
    why = "private";
  } else if (cl && length > settings_->config.delta.max_body) {
    why = "too_large";
  }
  mode_ = why != nullptr ? Mode::kStream : Mode::kCoded;
  if (mode_ == Mode::kCoded && cl) body_.reserve(length);
  return why;
}

void Exchange::on_response_head(http::ResponseHead&& head) {
  timeout_.stop();
  upstream_ms_ = daemon::seconds_since(started_) * 1000;
  status_ = head.status;
  stream_why_ = choose_mode(head);                  // Before the fields it reads go.
  http::remove(head.headers, "x-accel-buffering");  // For this proxy, like nginx does.
  if (mode_ == Mode::kCoded || status_ == 101) {
    http::remove(head.headers, "content-length");  // The edge sets it from the rebuilt body.
  }
  if (mode_ == Mode::kCoded) {
    last_body_ms_ = worker_.loop().now_ms();
    watch_trickle(settings_->config.delta.stream_after);
  }
  // An answer to an upgrade request keeps its Upgrade field: the protocol switched to, or the
  // ones a refusal (426) asks for.
  response_fields_ = tunnel::response_fields(std::move(head.headers), !upgrade_.empty());
  if (status_ == 101) return switch_protocols();
  if (mode_ == Mode::kNone) {
    if (!submit(BodyMode::kNone, true).ok())
      return fail(ResetReason::kUpstreamFailed, "bad_response_fields");
  } else if (mode_ == Mode::kStream) {
    result_ = log::DeltaResult::kStream;
    if (!submit(BodyMode::kStream, false).ok()) {
      return fail(ResetReason::kUpstreamFailed, "bad_response_fields");
    }
  }
}

Status Exchange::submit(BodyMode mode, bool end_stream) {
  const Status s = link_.session().submit_response(stream_, static_cast<uint16_t>(status_), mode,
                                                   response_fields_.views(), end_stream);
  link_.flush();
  return s;
}

// The backend answered 101 to the upgrade the request asked for: from now the stream carries the
// new protocol's bytes both ways, paced by the tunnel's windows and the backend socket.
void Exchange::switch_protocols() {
  switched_ = true;
  result_ = log::DeltaResult::kStream;
  if (!submit(BodyMode::kStream, false).ok()) {
    return fail(ResetReason::kUpstreamFailed, "bad_response_fields");
  }
  if (!early_body_.empty()) {
    std::vector<uint8_t> early;
    early.swap(early_body_);
    on_request_data(early, request_end_);
  } else if (request_end_) {
    on_request_data({}, true);
  }
}

void Exchange::on_response_body(std::span<const uint8_t> data) {
  body_bytes_ += data.size();
  shared_.metrics.body_bytes.inc(data.size());
  if (mode_ == Mode::kCoded) {
    body_.insert(body_.end(), data.begin(), data.end());
    if (body_.size() > settings_->config.delta.max_body) return switch_to_stream("too_large");
    last_body_ms_ = worker_.loop().now_ms();
    return;
  }
  if (mode_ != Mode::kStream) return;
  if (body_.empty()) {
    auto taken = link_.session().send_data(stream_, data, false);
    if (!taken.ok()) return fail(ResetReason::kInternal, "stream_gone");
    data = data.subspan(*taken);
    link_.flush();
  }
  if (!data.empty()) {
    // The edge cannot take more now: keep the rest and stop reading the backend.
    body_.insert(body_.end(), data.begin(), data.end());
    conn_->pause_reading();
  }
}

// A body being buffered for a delta that pauses for delta.stream_after before its end is a
// long poll or a trickle: from then on it streams, so each piece reaches the client as it is
// sent. Started once at the head; each piece only moves last_body_ms_, and the timer re-arms
// for what is left (as the edge's request_timeout does), so a body that arrives in one go costs
// one timer start.
void Exchange::watch_trickle(std::chrono::milliseconds delay) {
  trickle_.start(delay, [this] {
    if (mode_ != Mode::kCoded || backend_done_) return;
    const uint64_t idle = worker_.loop().now_ms() - last_body_ms_;
    const auto limit = static_cast<uint64_t>(settings_->config.delta.stream_after.count());
    if (idle < limit) return watch_trickle(std::chrono::milliseconds(limit - idle));
    switch_to_stream("trickle");
  });
}

void Exchange::switch_to_stream(const char* why) {
  // Longer than a delta is worth, or too slow to wait for: what was buffered goes first, the
  // rest as it comes.
  trickle_.stop();
  mode_ = Mode::kStream;
  stream_why_ = why;
  result_ = log::DeltaResult::kStream;
  if (!submit(BodyMode::kStream, false).ok())
    return fail(ResetReason::kUpstreamFailed, "bad_response_fields");
  conn_->pause_reading();
  pump();
}

void Exchange::on_response_end() {
  backend_done_ = true;
  trickle_.stop();
  // The backend's part is over: its connection goes back to the pool (or away).
  worker_.backend().release(std::move(conn_));
  if (mode_ == Mode::kNone) return finish();
  if (mode_ == Mode::kCoded) return respond_coded();
  pump();
}

// Finds the newest version the edge said it holds that this agent holds under the same key,
// with its base index built, and encodes against it (or in full when there is none).
void Exchange::respond_coded() {
  id_ = proto::VersionId::of(body_);
  if (held_.empty()) return encode(nullptr);
  base_lookup_ = shared_.store.lookup(worker_.loop(), key_, held_, VersionStore::Want::kPrepared,
                                      [this](BlobRef base) { encode(std::move(base)); });
}

void Exchange::encode(BlobRef base) {
  proto::DeltaEncoder& enc = worker_.encoder(settings_->config.delta);
  const Status s = enc.encode(base ? &base->prepared() : nullptr, body_, id_, payload_);
  if (!s.ok()) return fail(ResetReason::kInternal, "encode_failed");
  const bool delta = enc.last_stats().kind == proto::DeltaKind::kDelta;
  result_ = delta ? log::DeltaResult::kDelta : log::DeltaResult::kFull;
  (delta ? shared_.metrics.delta_delta : shared_.metrics.delta_full).inc();
  if (status_ == 200 && request_.method == "GET" &&
      shared_.base_policy.claim_base(key_hold_, id_, worker_.loop().now_ms())) {
    shared_.store.put(key_, Blob::make(std::move(body_), id_));
    proto::mark_keep_as_base(payload_);
  }
  body_.clear();
  if (!submit(BodyMode::kCoded, false).ok())
    return fail(ResetReason::kUpstreamFailed, "bad_response_fields");
  sent_ = 0;
  pump();
}

// Sends what is waiting, as far as the windows allow; called again on on_send_window. The
// exchange is finished (counted, logged) before its last frame is flushed: whoever holds the
// whole response sees it counted.
void Exchange::pump() {
  if (finished_) return;
  if (mode_ == Mode::kCoded && !payload_.empty()) {
    auto taken =
        link_.session().send_data(stream_, std::span<const uint8_t>(payload_).subspan(sent_), true);
    if (!taken.ok()) return fail(ResetReason::kInternal, "stream_gone");
    sent_ += *taken;
    if (sent_ == payload_.size()) finish();
    link_.flush();
    return;
  }
  if (mode_ != Mode::kStream) return;
  if (!body_.empty()) {
    auto taken = link_.session().send_data(stream_, body_, backend_done_);
    if (!taken.ok()) return fail(ResetReason::kInternal, "stream_gone");
    body_.erase(body_.begin(), body_.begin() + static_cast<long>(*taken));
    if (body_.empty() && backend_done_) finish();
    link_.flush();
    if (!body_.empty() || finished_) return;
    if (conn_) conn_->resume_reading();
    return;
  }
  if (backend_done_) {
    auto ended = link_.session().send_data(stream_, {}, true);
    if (!ended.ok()) return fail(ResetReason::kInternal, "stream_gone");
    finish();
    link_.flush();
    return;
  }
  // Nothing waits to go (a coded body switched to a stream before its first byte): read on.
  if (conn_) conn_->resume_reading();
}

void Exchange::on_error(Status status) {
  timeout_.stop();
  // A reused keep-alive connection the backend had closed: one retry on a fresh one, only for
  // a safe request without a body of which not one response byte came (retryable()).
  if (conn_ && conn_->retryable() && !retried_) {
    retried_ = true;
    drop_backend();
    return acquire(true);
  }
  if (std::string detail = conn_ ? conn_->error_detail() : std::string(); !detail.empty()) {
    // An https:// backend's TLS failed: OpenSSL's reason, the certificate's error and names.
    log::warn("backend TLS failed", {{"error", status.to_string()}, {"tls", detail}});
  }
  log::debug("backend failed", {{"error", status.to_string()}, {"host", host_}});
  fail(status.code() == Code::kTimeout ? ResetReason::kUpstreamTimeout
                                       : ResetReason::kUpstreamFailed,
       "backend_failed");
}

void Exchange::cancel(const char* why) {
  if (finished_) return;
  shared_.metrics.errors.with({why}).inc();
  error_ = why;
  cancelled_ = true;
  drop_backend();
  finish();
}

void Exchange::fail(ResetReason reason, const char* why) {
  if (finished_) return;
  shared_.metrics.errors.with({why}).inc();
  error_ = why;
  link_.session().reset(stream_, reason);
  link_.flush();
  log::warn("exchange failed", {{"reason", why},
                                {"reset", proto::reset_reason_name(reason)},
                                {"host", host_},
                                {"path", request_.target}});
  status_ = reason == ResetReason::kUpstreamTimeout ? 504 : 502;
  drop_backend();
  finish();
}

void Exchange::drop_backend() {
  if (!conn_) return;
  conn_->detach();  // Mid-exchange: never reused.
  worker_.loop().defer_delete(std::move(conn_));
}

void Exchange::finish() {
  if (finished_) return;
  finished_ = true;
  *alive_ = false;
  base_lookup_.cancel();
  key_hold_.release();  // Over for the base policy now, not when deleted a loop turn later.
  timeout_.stop();
  trickle_.stop();
  shared_.metrics.in_flight.sub(1);
  // Answered while the edge's side is still open (an upgraded stream the backend closed, an
  // answer before the whole request body): the edge stops sending, and the stream is freed.
  // (Not merely while this side's last DATA waits in the session's queue.)
  if (link_.session().receiving(stream_)) {
    link_.session().reset_after_data(stream_);
    link_.flush();
  }
  const double secs = daemon::seconds_since(started_);
  if (!cancelled_) shared_.metrics.request(status_, secs);
  if (!cancelled_ && result_ == log::DeltaResult::kStream) shared_.metrics.delta_stream.inc();
  const bool streamed = result_ == log::DeltaResult::kStream && stream_why_ != nullptr;
  log::access({.method = request_.method,
               .host = host_,
               .path = request_.target,
               .status = status_,
               .body_bytes = body_bytes_,
               .link_bytes = mode_ == Mode::kCoded ? payload_.size() : body_bytes_,
               .delta = result_,
               .stream = streamed ? stream_why_ : "",
               .duration_ms = secs * 1000,
               .upstream_ms = upstream_ms_,
               .error = error_ != nullptr ? error_ : "",
               .agent = {},
               .client = {},
               .protocol = {},
               .user_agent = {},
               .request_id = http::find(request_.headers, "x-request-id").value_or("")});
  link_.finished(stream_);
}

}  // namespace coilgun::origin
