#include "edge/client_exchange.h"

#include <algorithm>
#include <cstdio>
#include <random>

#include "common/obs/log.h"
#include "common/store/cache_key.h"

namespace coilgun::edge {
namespace {

using proto::BodyMode;
using proto::HeaderField;
using proto::ResetReason;

// "Host:8080" -> "host"; "[::1]:8080" -> "::1".
std::string host_without_port(std::string_view authority) {
  if (!authority.empty() && authority[0] == '[') {
    const size_t end = authority.find(']');
    return http::to_lower(authority.substr(1, end == std::string_view::npos ? end : end - 1));
  }
  return http::to_lower(authority.substr(0, authority.find(':')));
}

// The request's id: the client's X-Request-ID when it is 1..128 visible ASCII characters (a
// load balancer in front named it), else 32 random hex digits (128 bits: unique in practice).
std::string request_id(const std::vector<http::Header>& headers) {
  const auto given = http::find(headers, "x-request-id");
  if (given && !given->empty() && given->size() <= 128 &&
      std::all_of(given->begin(), given->end(), [](char c) { return c > 0x20 && c < 0x7f; })) {
    return std::string(*given);
  }
  thread_local std::mt19937_64 rng{std::random_device{}()};
  char out[33];
  std::snprintf(out, sizeof out, "%016llx%016llx", static_cast<unsigned long long>(rng()),
                static_cast<unsigned long long>(rng()));
  return out;
}

}  // namespace

ClientExchange::ClientExchange(EdgeWorker& worker, http::ServerConnection& c)
    : worker_(worker), shared_(worker.shared()), client_(&c), timeout_(worker.loop()) {}

void ClientExchange::begin() {
  settings_ = shared_.now();
  shared_.metrics.in_flight.add(1);
  const http::RequestHead& req = client_->request();
  method_ = req.method;
  target_ = req.target;
  client_ip_ = client_->peer_ip();
  user_agent_ = http::find(req.headers, "user-agent").value_or("");
  request_id_ = request_id(req.headers);
  protocol_ = req.version_minor == 0 ? "HTTP/1.0" : "HTTP/1.1";
  authority_ = std::string(http::find(req.headers, "host").value_or(""));
  // RFC 9112 §3.2.2: "When an origin server receives a request with an absolute-form of
  // request-target, the origin server MUST ignore the received Host header field (if any) and
  // instead use the host information of the request-target." The parser checked that
  // authority (no userinfo, a valid host); it is what routes the request and, as :authority,
  // the Host the backend receives (the client's Host field is not forwarded).
  if (auto absolute = http::split_absolute_target(target_)) {
    authority_ = std::string(absolute->authority);
    target_ = std::move(absolute->origin_form);
  }
  // RFC 9112 §3.2 requires Host of HTTP/1.1 only. An HTTP/1.0 request without one (or with an
  // empty one) names no host: it takes the default route, and the backend receives an empty
  // Host, which is what a client must send when the target URI has no authority (§3.2). An
  // empty Host in HTTP/1.1 names an "http" URI with an empty host, which a recipient MUST
  // reject (RFC 9110 §4.2.1).
  if (authority_.empty() && req.version_minor != 0) return fail(400, "no_host");
  if (target_.empty() || target_[0] != '/') {
    if (!(method_ == "OPTIONS" && target_ == "*")) return fail(400, "bad_target");
  }
  host_ = host_without_port(authority_);
  route_ = config::match_route(settings_->config, host_);
  if (route_ == nullptr) return fail(421, "unknown_host");
  key_ = CacheKey{"", host_, target_}.str();

  const auto length = http::find(req.headers, "content-length");
  if (client_->upgrade_requested()) upgrade_ = http::find(req.headers, "upgrade").value_or("");
  has_body_ = (length.has_value() && *length != "0") ||
              http::has_token(req.headers, "transfer-encoding", "chunked") || !upgrade_.empty();
  tunnel::TunnelRequest request;
  request.method = method_;
  request.authority = authority_;
  request.path = target_;
  request.upgrade = upgrade_;
  request.headers = req.headers;
  http::set(request.headers, "X-Request-ID", request_id_);
  route_options(*route_, request);
  fields_ = tunnel::request_fields(request, client_ip_);

  progress();
  arm_timeout(idle_limit_);
  expects_continue_ = req.expects_continue();
  pool_ = worker_.pick_pool(*route_, key_);
  if (pool_ == nullptr) return no_tunnel();
  // A dormant agent's handshake starts now, beside the store's answer.
  if (!pool_->up()) pool_->want(true);
  open_stream(false);
}

// What the route sets for this exchange: the idle limit here, and for the agent
// (PROTOCOL.md §3) how long to wait for the backend and whether private responses are
// delta-coded. The edge waits for the backend's answer at least as long as the agent does.
void ClientExchange::route_options(const config::EdgeRoute& route, tunnel::TunnelRequest& request) {
  idle_limit_ = route.request_timeout.value_or(settings_->config.limits.request_timeout);
  if (route.backend_timeout) {
    request.backend_timeout = *route.backend_timeout;
    idle_limit_ = std::max(idle_limit_, *route.backend_timeout + std::chrono::seconds(1));
  }
  request.private_deltas = route.private_deltas;
}

// Opens the stream, naming the versions this edge holds (which the store answers on a later
// turn) unless |full| (a refetch after a delta that could not be used) or not a GET.
void ClientExchange::open_stream(bool full) {
  if (full || method_ != "GET") return submit({});
  held_lookup_ = shared_.store.versions(
      worker_.loop(), key_, [this](std::vector<proto::VersionId> held) { submit(held); });
}

// Sends the request on the chosen agent's least busy tunnel up now (or, if that agent went
// down meanwhile, the next agent's), then what of the body has come.
void ClientExchange::submit(std::span<const proto::VersionId> held) {
  link_ = pool_->pick();
  if (link_ == nullptr && !pool_->available()) {
    pool_ = worker_.pick_pool(*route_, key_);
    if (pool_ == nullptr) return no_tunnel();
    link_ = pool_->pick();
  }
  if (link_ == nullptr) {
    // Its tunnel is being made (the agent was dormant, or the edge just started): wait for it.
    if (held.data() != held_.data()) held_.assign(held.begin(), held.end());
    waiting_ = true;
    pool_->wait(this);
    return;
  }
  auto stream = link_->session().submit_request(held, fields_.views(), !has_body_);
  if (!stream.ok()) {
    if (stream.status().code() == Code::kTooLarge || stream.status().code() == Code::kMalformed) {
      return fail(431, "request_fields_over_limit");
    }
    return fail(502, "tunnel_busy");
  }
  stream_ = *stream;
  agent_ = pool_->agent();
  link_->attach(stream_, this);
  link_->session().expect_answer(worker_.loop().now_ms());
  link_->flush();
  if (expects_continue_ && client_ != nullptr) client_->send_continue();
  expects_continue_ = false;
  if (has_body_) send_body();
}

// The deadline moves with progress (the request body, the response, the client taking bytes),
// so a long download is never cut; only a stall is. Bytes waiting for a client that takes none
// are a stall too, even while it sends (a pipe whose reader stopped would otherwise hold its
// share of the tunnel's window for ever). The timer re-arms for what is left rather than
// restarting on every chunk.
void ClientExchange::arm_timeout(std::chrono::milliseconds delay) {
  timeout_.start(delay, [this] {
    const uint64_t now = worker_.loop().now_ms();
    uint64_t idle = now - last_progress_ms_;
    if (unconsumed_ > 0) idle = std::max(idle, now - client_took_ms_);
    const auto limit = static_cast<uint64_t>(idle_limit_.count());
    if (idle < limit) return arm_timeout(std::chrono::milliseconds(limit - idle));
    fail(504, "request_timeout");
  });
}

void ClientExchange::on_client_body(std::span<const uint8_t> data) {
  if (finished_) return;
  progress();
  body_out_.insert(body_out_.end(), data.begin(), data.end());
  send_body();
}

void ClientExchange::on_client_end() {
  // An upgrade request's HTTP part is over; its stream stays open for what follows a 101, and
  // ends when the answer is another (on_response) or the client's side of the pipe ends.
  if (!upgrade_.empty()) return;
  client_body_done_ = true;
  if (!finished_) send_body();
}

// Request body into the tunnel as the window allows (once the stream is open); the client is
// read only as fast.
void ClientExchange::send_body() {
  if (!has_body_) return;
  if (direct_) {
    direct_->send_body(body_out_);
    body_out_.clear();
    if (client_body_done_) direct_->send_end();
    if (client_ != nullptr && !direct_->writable()) client_->pause_reading();
    return;
  }
  if (link_ != nullptr && stream_ != 0 && link_->session().stream_open(stream_)) {
    auto taken = link_->session().send_data(stream_, body_out_, client_body_done_);
    if (!taken.ok()) return;
    body_out_.erase(body_out_.begin(), body_out_.begin() + static_cast<long>(*taken));
    link_->flush();
  }
  if (client_ == nullptr) return;
  if (body_out_.size() > 256 * 1024) {
    client_->pause_reading();
  } else {
    client_->resume_reading();
  }
}

void ClientExchange::on_upgraded_end() {
  client_body_done_ = true;
  if (!finished_) send_body();
}

void ClientExchange::on_window() {
  if (!body_out_.empty() || (client_body_done_ && has_body_)) send_body();
}

void ClientExchange::on_response(uint16_t status, BodyMode mode,
                                 std::span<const HeaderField> fields, bool end) {
  progress();
  if (proto::is_interim_status(status)) return on_interim(status, fields);
  upstream_ms_ = daemon::seconds_since(started_) * 1000;
  if (!upgrade_.empty()) {
    if (status != 101) {  // Refused: the request's stream ends here.
      client_body_done_ = true;
      send_body();
    } else if (mode != BodyMode::kStream) {
      return fail(502, "bad_upgrade");
    }
  }
  status_ = status;
  mode_ = mode;
  response_headers_ = tunnel::http_headers(fields);
  if (mode == BodyMode::kNone) {
    write_head(http::ResponseFraming::kNone, 0);
    count();
    if (client_ != nullptr) client_->respond_end();
    return finish();
  }
  if (mode == BodyMode::kStream) {
    result_ = log::DeltaResult::kStream;
    // Counted before any body byte is written, like delta and full: whoever has read the
    // whole response sees it counted (coilgun-replay attributes results that way).
    shared_.metrics.delta_stream.inc();
    auto cl = http::find(response_headers_, "content-length");
    if (cl) {
      const std::optional<uint64_t> n = http::parse_content_length(*cl);
      if (!n) return fail(502, "bad_response_fields");
      http::remove(response_headers_, "content-length");
      stream_length_ = *n;
      write_head(http::ResponseFraming::kContentLength, *n);
    } else {
      write_head(http::ResponseFraming::kChunked, 0);
    }
  }
  if (end) on_data({}, true);
}

// 103 Early Hints and other 1xx go on to HTTP/1.1 clients (RFC 9110 §15.2: a proxy forwards
// them); a 100 Continue does not, the edge sent its own when the client expected one.
void ClientExchange::on_interim(uint16_t status, std::span<const HeaderField> fields) {
  if (client_ == nullptr || status == 100) return;
  http::ResponseHead head;
  head.status = status;
  head.headers = tunnel::http_headers(fields);
  client_->send_interim(std::move(head));  // Dropped if it cannot be written: advisory.
}

void ClientExchange::write_head(http::ResponseFraming framing, uint64_t length) {
  if (client_ == nullptr || head_sent_) return;
  http::ResponseHead head;
  head.status = status_;
  head.headers = std::move(response_headers_);
  if (framing == http::ResponseFraming::kNone && method_ != "HEAD" && status_ != 204 &&
      status_ != 304 && !http::find(head.headers, "content-length")) {
    http::set(head.headers, "Content-Length", "0");
  }
  // Refused (fields that cannot be written, a 101 that names no protocol the client asked
  // for): nothing went out, and the client gets a 502.
  if (!client_->respond_head(std::move(head), framing, length).ok()) {
    return fail(502, "bad_response_fields");
  }
  head_sent_ = true;
}

void ClientExchange::on_data(std::span<const uint8_t> data, bool end) {
  if (finished_) return;
  progress();
  link_bytes_ += data.size();
  if (mode_ == BodyMode::kCoded) {
    if (payload_.size() + data.size() > settings_->config.limits.max_coded_body + 64) {
      return fail(502, "coded_body_over_limit");
    }
    payload_.insert(payload_.end(), data.begin(), data.end());
    link_->session().consume(stream_, data.size());
    if (end)
      rebuild();
    else
      link_->flush();
    return;
  }
  if (mode_ != BodyMode::kStream) return;
  body_bytes_ += data.size();
  shared_.metrics.body_bytes.inc(data.size());
  // The client holds the whole body once its last byte is written, before the stream's end
  // may come (in a later frame): counted first.
  if (stream_length_ && body_bytes_ >= *stream_length_) count();
  // A write that fails aborts this exchange from inside (on_client_abort): finished_ after.
  if (client_ != nullptr && !data.empty()) client_->respond_body(data);
  if (unconsumed_ == 0) client_took_ms_ = worker_.loop().now_ms();
  unconsumed_ += data.size();
  on_client_writable();
  if (end) {
    count();
    if (client_ != nullptr) client_->respond_end();
    finish();
  }
}

void ClientExchange::on_client_writable() {
  if (direct_) {
    if (client_ != nullptr && client_->writable()) direct_->resume_reading();
    return;
  }
  // Streamed bytes are granted back to the agent once the client socket took them.
  if (link_ == nullptr || unconsumed_ == 0 || finished_) return;
  if (client_ != nullptr && !client_->writable()) return;
  progress();
  client_took_ms_ = last_progress_ms_;
  link_->session().consume(stream_, unconsumed_);
  unconsumed_ = 0;
  link_->flush();
}

void ClientExchange::on_trailers(std::span<const HeaderField> fields) {
  if (finished_) return;
  const std::vector<http::Header> trailers = tunnel::http_headers(fields);
  if (mode_ == BodyMode::kStream) {
    count();
    // Trailers that are no valid HTTP/1.1 fields (the tunnel's rules are looser) cannot end the
    // response faithfully: the body went out, and the connection closes instead.
    if (client_ != nullptr && !client_->respond_end(trailers).ok()) {
      return fail(502, "bad_response_fields");
    }
    return finish();
  }
  on_data({}, true);
}

// The whole payload is here: decode it, check it, keep it, serve it.
void ClientExchange::rebuild() {
  auto header = proto::parse_delta(payload_);
  if (!header.ok()) return refetch("malformed_payload");
  result_ =
      header->kind == proto::DeltaKind::kDelta ? log::DeltaResult::kDelta : log::DeltaResult::kFull;
  auto decode = [this, h = *header](BlobRef base) {
    std::optional<std::span<const uint8_t>> base_bytes;
    if (base) base_bytes = base->bytes();
    std::vector<uint8_t> out;
    const Status s =
        worker_.decoder().decode(h, base_bytes, settings_->config.limits.max_coded_body, out);
    if (!s.ok()) {
      // Never wrong bytes to a client: ask again for the whole body.
      return refetch(code_name(s.code()));
    }
    BlobRef blob = Blob::make(std::move(out), h.id);
    // Only what the agent keeps as a base (PROTOCOL.md §6) is worth keeping here.
    if (h.keep_as_base && status_ == 200 && method_ == "GET") shared_.store.put(key_, blob);
    serve(std::move(blob));
  };
  if (header->kind != proto::DeltaKind::kDelta) return decode(nullptr);
  base_lookup_ = shared_.store.lookup(worker_.loop(), key_, {&header->base, 1},
                                      VersionStore::Want::kBytes, [this, decode](BlobRef base) {
                                        if (!base) return refetch("base_not_held");
                                        decode(std::move(base));
                                      });
}

void ClientExchange::serve(BlobRef body) {
  (result_ == log::DeltaResult::kDelta ? shared_.metrics.delta_delta : shared_.metrics.delta_full)
      .inc();
  body_bytes_ = body->size();
  shared_.metrics.body_bytes.inc(body->size());
  http::remove(response_headers_, "content-length");
  write_head(http::ResponseFraming::kContentLength, body->size());
  count();
  if (client_ != nullptr) {
    client_->respond_body(body->bytes());
    if (client_ != nullptr) client_->respond_end();  // Unless the write failed (on_client_abort).
  }
  finish();
}

void ClientExchange::refetch(const char* why) {
  log::warn("delta not usable, fetching in full",
            {{"reason", why}, {"host", host_}, {"path", target_}});
  if (refetched_ || has_body_) return fail(502, "verify_failed");
  refetched_ = true;
  release_stream();
  payload_.clear();
  if (link_ == nullptr || !link_->ready()) return fail(502, "tunnel_lost");
  // Counted once, and only when it happens: a failure instead counts its own reason.
  shared_.metrics.errors.with({"refetch"}).inc();
  open_stream(true);
}

void ClientExchange::on_reset(ResetReason reason) {
  stream_ = 0;  // The link forgot the stream already.
  if (finished_) return;
  if (reason == ResetReason::kRefused && !head_sent_ && !retried_ && !has_body_) {
    // Never processed (the agent was draining): try once more on another tunnel.
    retried_ = true;
    shared_.metrics.retries.inc();
    return open_stream(refetched_);
  }
  if (reason == ResetReason::kBaseMissing && !refetched_) return refetch("base_missing");
  switch (reason) {
    case ResetReason::kUpstreamTimeout:
      return fail(504, "backend_timeout");
    case ResetReason::kUpstreamFailed:
      return fail(502, "backend_failed");
    case ResetReason::kUpstreamRefused:
      return fail(502, "backend_refused");
    default:
      return fail(502, "stream_reset");
  }
}

void ClientExchange::on_tunnel_lost() {
  link_ = nullptr;
  stream_ = 0;
  // The whole answer is here (a coded payload waiting for its base): nothing was lost.
  if (base_lookup_.active()) return;
  if (!retry_elsewhere()) fail(502, "tunnel_lost");
}

// Not while failing or after the client left (fail() and on_client_abort() reset the stream,
// and that write may lose the tunnel from inside them).
bool ClientExchange::retry_elsewhere() {
  if (finished_ || retried_ || head_sent_ || has_body_ || !http::is_safe_method(method_) ||
      client_ == nullptr || !error_.empty()) {
    return false;
  }
  // Another agent, else another tunnel of the same one.
  AgentPool* next = worker_.pick_pool(*route_, key_, pool_);
  if (next == nullptr && pool_->up()) next = pool_;
  if (next == nullptr) return false;
  log::info("tunnel lost, sending the request to another agent",
            {{"from", pool_->agent()}, {"to", next->agent()}, {"host", host_}, {"path", target_}});
  retried_ = true;
  lost_ = true;
  shared_.metrics.retries.inc();
  pool_ = next;
  status_ = 0;
  payload_.clear();
  mode_ = BodyMode::kNone;
  open_stream(refetched_);
  return true;
}

void ClientExchange::on_tunnel_ready() {
  waiting_ = false;
  if (!finished_) submit(held_);
}

// The connect this exchange waited on failed: the next agent of the route, else the fallback
// or 502.
void ClientExchange::on_tunnel_failed() {
  waiting_ = false;
  if (finished_) return;
  pool_ = worker_.pick_pool(*route_, key_, pool_);
  if (pool_ == nullptr) return no_tunnel();
  if (!pool_->up()) pool_->want(true);
  submit(held_);
}

void ClientExchange::no_tunnel() {
  // The access line names the agents none of which had a tunnel (issue #14).
  agent_.clear();
  for (const config::HostPort& a : route_->agents) {
    if (!agent_.empty()) agent_ += ',';
    agent_ += a.to_string();
  }
  if (route_->fallback.empty() || !upgrade_.empty()) {
    // After a lost tunnel, the retry's: the request was cut, not refused at once.
    return fail(502, lost_ ? "tunnel_lost" : "tunnel_down");
  }
  start_direct();
}

// ---- The fallback (DirectFetch) -------------------------------------------------------------

// The request as the agent would send it to its backend (the same fields, Via), but framed for
// the body the client sends, and with the client's Accept-Encoding: nothing is delta-coded.
void ClientExchange::start_direct() {
  auto parsed = tunnel::parse_request_fields(fields_.views());
  if (!parsed.ok()) return fail(502, "direct_failed");  // request_fields() made them.
  const std::optional<std::string_view> cl =
      parsed->headers.empty() ? std::nullopt : http::find(parsed->headers, "content-length");
  http::BodyFraming framing = http::BodyFraming::kNone;
  uint64_t length = 0;
  if (cl) {
    framing = http::BodyFraming::kContentLength;
    length = http::parse_content_length(*cl).value_or(0);  // The client's parser checked it.
  } else if (has_body_) {
    framing = http::BodyFraming::kChunked;
  }
  http::RequestHead head = tunnel::backend_request(std::move(parsed).value());
  http::add_via(head.headers, "1.1 coilgun");
  upstream_ms_ = -1;
  result_ = log::DeltaResult::kDirect;
  // The context of the settings this request started under, which named this fallback (a
  // reload since may have dropped it): an https:// URL is never spoken to in cleartext.
  if (route_->fallback.https && settings_->web_tls == nullptr) return fail(502, "direct_failed");
  DirectFetch::Sink& sink = *this;  // A private base: converted here, where it is accessible.
  direct_ = std::make_unique<DirectFetch>(worker_.loop(),
                                          worker_.direct_pool(route_->fallback, settings_->web_tls),
                                          sink, std::move(head), framing, length);
  direct_->start();  // May answer from inside (a failure): direct_ is set by then.
  if (finished_) return;
  if (expects_continue_ && client_ != nullptr) client_->send_continue();
  expects_continue_ = false;
  send_body();
}

void ClientExchange::direct_interim(http::ResponseHead&& head) {
  progress();
  const tunnel::FieldList fields = tunnel::response_fields(std::move(head.headers), false);
  on_interim(static_cast<uint16_t>(head.status), fields.views());
}

void ClientExchange::direct_head(http::ResponseHead&& head) {
  progress();
  upstream_ms_ = daemon::seconds_since(started_) * 1000;
  status_ = static_cast<uint16_t>(head.status);
  const std::optional<uint64_t> length = head.content_length;
  const tunnel::FieldList fields = tunnel::response_fields(std::move(head.headers), false);
  response_headers_ = tunnel::http_headers(fields.views());
  shared_.metrics.delta_direct.inc();
  if (method_ == "HEAD" || status_ == 204 || status_ == 304) {
    return write_head(http::ResponseFraming::kNone, 0);
  }
  http::remove(response_headers_, "content-length");
  if (length) {
    stream_length_ = *length;
    write_head(http::ResponseFraming::kContentLength, *length);
  } else {
    write_head(http::ResponseFraming::kChunked, 0);
  }
}

void ClientExchange::direct_body(std::span<const uint8_t> data) {
  if (finished_) return;
  progress();
  body_bytes_ += data.size();
  shared_.metrics.body_bytes.inc(data.size());
  if (stream_length_ && body_bytes_ >= *stream_length_) count();
  if (client_ != nullptr) client_->respond_body(data);  // May abort this exchange inside.
  if (client_ != nullptr && !client_->writable() && direct_) direct_->pause_reading();
}

void ClientExchange::direct_end() {
  if (finished_) return;
  count();
  if (client_ != nullptr) client_->respond_end();
  finish();
}

void ClientExchange::direct_failed(Status why, std::string detail) {
  const std::string fallback = route_->fallback.to_string();
  if (detail.empty()) {
    log::warn(
        "fallback failed",
        {{"fallback", fallback}, {"error", why.to_string()}, {"host", host_}, {"path", target_}});
  } else {  // TLS: OpenSSL's reason, the certificate's error and names.
    log::warn("fallback failed", {{"fallback", fallback},
                                  {"error", why.to_string()},
                                  {"tls", detail},
                                  {"host", host_},
                                  {"path", target_}});
  }
  fail(why.code() == Code::kTimeout ? 504 : 502, "direct_failed");
}

void ClientExchange::direct_writable() {
  if (client_ != nullptr) client_->resume_reading();
}

void ClientExchange::on_client_abort() {
  if (client_ == nullptr) return;  // fail() closed the connection: not a client that went away.
  client_ = nullptr;
  if (finished_) return;
  shared_.metrics.errors.with({"client_gone"}).inc();
  if (link_ != nullptr && stream_ != 0) {
    link_->session().reset(stream_, ResetReason::kCancel);  // Frees the agent at once.
    link_->flush();
  }
  error_ = "client_gone";
  status_ = 499;
  finish();
}

void ClientExchange::fail(int status, const char* reason) {
  if (finished_) return;
  error_ = reason;
  shared_.metrics.errors.with({reason}).inc();
  if (link_ != nullptr && stream_ != 0 && link_->session().stream_open(stream_)) {
    link_->session().reset(stream_, ResetReason::kCancel);
    link_->flush();
  }
  status_ = static_cast<uint16_t>(status);
  if (client_ != nullptr) {
    if (!head_sent_) {
      head_sent_ = true;
      const bool close = status == 400 || status == 431;
      client_->respond_simple(
          status, std::string(http::status_reason(status)) + " (" + reason + ")\n", close);
    } else {
      // A response already begun cannot be turned into an error: the connection closes, and
      // its abort is not this exchange's (which would count it again as client_gone).
      http::ServerConnection* c = client_;
      client_ = nullptr;
      c->close();
    }
  }
  finish();
}

void ClientExchange::release_stream() {
  if (link_ != nullptr && stream_ != 0) link_->detach(stream_);
  stream_ = 0;
}

// Counts the exchange in coilgun_requests_total and the latency histogram, once. Called before
// the response's last bytes are written: whoever has read a whole response sees it counted
// (the admin endpoints run on another thread).
void ClientExchange::count() {
  if (counted_) return;
  counted_ = true;
  shared_.metrics.request(status_, daemon::seconds_since(started_));
}

void ClientExchange::finish() {
  if (finished_) return;
  finished_ = true;
  held_lookup_.cancel();
  if (waiting_) pool_->forget(this);
  waiting_ = false;
  base_lookup_.cancel();
  if (direct_) direct_->abandon();
  timeout_.stop();
  shared_.metrics.in_flight.sub(1);
  // Over while this side of the stream is still open (an answer before the whole request body,
  // a pipe whose backend closed): the agent stops, and the stream is freed.
  if (link_ != nullptr && stream_ != 0 && link_->session().sending(stream_)) {
    link_->session().reset(stream_, ResetReason::kCancel);
    link_->flush();
  }
  release_stream();
  const double secs = daemon::seconds_since(started_);
  count();
  log::access({.method = method_,
               .host = host_,
               .path = target_,
               .status = status_,
               .body_bytes = body_bytes_,
               .link_bytes = link_bytes_,
               .delta = result_,
               .stream = {},  // Why a body streamed is the agent's knowledge.
               .duration_ms = secs * 1000,
               .upstream_ms = upstream_ms_,
               .error = error_,
               .agent = agent_,
               .client = client_ip_,
               .protocol = protocol_,
               .user_agent = user_agent_,
               .request_id = request_id_});
  client_ = nullptr;
  worker_.exchange_done();
}

}  // namespace coilgun::edge
