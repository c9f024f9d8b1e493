#include "common/tunnel/session.h"

#include <algorithm>

namespace coilgun::tunnel {
namespace {

using proto::Frame;
using proto::FrameType;

constexpr int64_t kMaxWindow = 0x7fffffff;

Status protocol(const char* what) { return Status(Code::kProtocol, what, Side::kTunnel); }

GoawayCode goaway_code_for(const Status& s) {
  switch (s.code()) {
    case Code::kMalformed:
    case Code::kTooLarge:
    case Code::kUnsupported:
    case Code::kCorrupt:
    case Code::kProtocol:
      return GoawayCode::kProtocol;
    default:
      return GoawayCode::kInternal;
  }
}

}  // namespace

Session::Session(const SessionOptions& options, Handler& handler, uint64_t now_ms)
    : options_(options),
      handler_(handler),
      decoder_(
          std::clamp<uint32_t>(options.max_frame_payload, 16 * 1024, proto::kMaxFramePayloadLimit)),
      header_decoder_(
          proto::HeaderLimits{.max_fields = 256, .max_block_bytes = options.max_header_block}) {
  options_.max_frame_payload = decoder_.max_payload();
  options_.stream_window = std::clamp<uint32_t>(options_.stream_window, kDefaultStreamWindow,
                                                static_cast<uint32_t>(kMaxWindow));
  options_.connection_window = std::clamp<uint32_t>(
      options_.connection_window, kInitialConnectionWindow, static_cast<uint32_t>(kMaxWindow));
  recv_conn_window_ = options_.connection_window;
  next_ping_ms_ = now_ms + options_.ping_interval_ms;

  const proto::Setting settings[] = {
      {proto::SettingId::kMaxFramePayload, options_.max_frame_payload},
      {proto::SettingId::kInitialStreamWindow, options_.stream_window},
      {proto::SettingId::kMaxConcurrentStreams, options_.max_streams},
      {proto::SettingId::kMaxHeaderBlock, static_cast<uint32_t>(options_.max_header_block)},
  };
  (void)proto::write_settings(out_, settings);
  if (options_.connection_window > kInitialConnectionWindow) {
    (void)proto::write_window_update(out_, 0,
                                     options_.connection_window - kInitialConnectionWindow);
  }
}

Session::~Session() = default;

void Session::take_output(std::vector<uint8_t>& out, size_t budget) {
  if (out.empty()) {
    out.swap(out_);
  } else {
    out.insert(out.end(), out_.begin(), out_.end());
    out_.clear();
  }
  // Each stream in turn gets a slice; one with more goes to the back.
  while (budget > 0 && !turn_.empty()) {
    const uint32_t id = turn_.front();
    turn_.pop_front();
    Stream* st = find(id);
    if (st == nullptr || !st->in_turn) continue;  // Reset meanwhile.
    const size_t n = take_slice(id, *st, budget, out);
    budget -= std::min(budget, n);
    st = find(id);  // Trailers that failed to encode reset it.
    if (st == nullptr) continue;
    if (st->in_turn) {
      turn_.push_back(id);
    } else if (st->reset_when_drained) {
      (void)proto::write_reset(out, id, ResetReason::kCancel);  // Right behind its last DATA.
      grant_connection(st->recv_unconsumed);
      forget(id);
    } else {
      close_if_done(id);
    }
  }
}

// A slice is small enough that streams interleave finely, large enough that frame headers cost
// little (9 bytes in 16 KiB).
constexpr size_t kSlice = 16 * 1024;

size_t Session::take_slice(uint32_t id, Stream& st, size_t budget, std::vector<uint8_t>& out) {
  const size_t before = out.size();
  const size_t left = st.queued.size() - st.queued_at;
  const size_t n = std::min({left, kSlice, static_cast<size_t>(peer_max_frame_payload_), budget});
  const bool last = st.end_queued && n == left;
  if (n > 0 || last) {
    (void)proto::write_data(out, id, std::span<const uint8_t>(st.queued).subspan(st.queued_at, n),
                            last);
  }
  st.queued_at += n;
  queued_bytes_ -= n;
  if (st.queued_at < st.queued.size()) return out.size() - before;
  st.queued.clear();
  st.queued_at = 0;
  st.end_queued = false;
  st.in_turn = false;
  if (st.trailers_queued) {
    // Encoded now, at its place in the output: header blocks reach the peer in the order they
    // were encoded.
    std::vector<HeaderField> fields;
    for (const auto& [name, value] : st.trailers) fields.push_back({name, value});
    st.trailers_queued = false;
    if (encode_fields(fields).ok()) {
      (void)proto::write_trailers(out, id, block_);
    } else if (!failed_) {
      reset(id, ResetReason::kInternal);
    }
  }
  return out.size() - before;
}

// Drops a stream, and whatever DATA it still had queued (turn_ skips it).
void Session::forget(uint32_t id) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  queued_bytes_ -= it->second.queued.size() - it->second.queued_at;
  streams_.erase(it);
}

void Session::queue_turn(uint32_t id, Stream& st) {
  if (st.in_turn) return;
  st.in_turn = true;
  turn_.push_back(id);
}

Session::Stream* Session::find(uint32_t id) {
  auto it = streams_.find(id);
  return it == streams_.end() ? nullptr : &it->second;
}

Status Session::fail(Status status) {
  if (!failed_) {
    failed_ = true;
    (void)proto::write_goaway(out_, options_.client ? 0 : last_peer_stream_,
                              goaway_code_for(status), status.message());
  }
  return status;
}

// ---- Receiving ----------------------------------------------------------------------------

Status Session::receive(std::span<const uint8_t> data, uint64_t now_ms) {
  if (failed_) return Status(Code::kClosed, "tunnel session failed", Side::kTunnel);
  now_ms_ = now_ms;
  if (!data.empty()) {
    last_received_ms_ = now_ms;
    answer_due_ms_ = UINT64_MAX;  // The peer is alive.
  }
  // Frames complete in |data| are decoded in place; only a trailing partial frame is copied.
  const bool buffered = !in_.empty();
  if (buffered) in_.insert(in_.end(), data.begin(), data.end());
  std::span<const uint8_t> src = buffered ? std::span<const uint8_t>(in_) : data;
  size_t used = 0;
  Status status;
  while (status.ok() && !failed_) {
    Frame f;
    auto r = decoder_.decode(src.subspan(used), f);
    if (!r.ok()) {
      status = r.status();
      break;
    }
    if (*r == 0) break;
    used += *r;
    status = on_frame(f);
  }
  if (buffered) {
    in_.erase(in_.begin(), in_.begin() + static_cast<long>(used));
  } else {
    in_.assign(src.begin() + static_cast<long>(used), src.end());
  }
  if (!status.ok()) return fail(status);
  return Status::Ok();
}

Status Session::on_frame(const Frame& f) {
  switch (f.type) {
    case FrameType::kRequest:
      return on_request_frame(f);
    case FrameType::kResponse:
      return on_response_frame(f);
    case FrameType::kData:
      return on_data_frame(f);
    case FrameType::kTrailers:
      return on_trailers_frame(f);
    case FrameType::kReset: {
      auto reason = proto::parse_reset(f);
      if (!reason.ok()) return reason.status();
      Stream* st = find(f.stream);
      if (st == nullptr) return Status::Ok();  // Already closed here.
      recv_conn_unacked_ += st->recv_unconsumed;
      forget(f.stream);
      handler_.on_stream_reset(f.stream, *reason);
      return Status::Ok();
    }
    case FrameType::kWindowUpdate:
      return on_window_update_frame(f);
    case FrameType::kPing: {
      auto opaque = proto::parse_ping(f);
      if (!opaque.ok()) return opaque.status();
      if ((f.flags & proto::kFlagAck) == 0) {
        (void)proto::write_ping(out_, *opaque, true);
      } else if (ping_outstanding_ && *opaque == ping_sent_ms_) {
        rtt_ms_ = now_ms_ - ping_sent_ms_;
        ping_outstanding_ = false;
        next_ping_ms_ = now_ms_ + options_.ping_interval_ms;
        handler_.on_rtt(*rtt_ms_);
      }
      return Status::Ok();
    }
    case FrameType::kSettings:
      return on_settings_frame(f);
    case FrameType::kGoaway:
      return on_goaway_frame(f);
  }
  return protocol("unknown frame");
}

Status Session::on_request_frame(const Frame& f) {
  if (options_.client) return protocol("REQUEST sent to the edge");
  auto head = proto::parse_request(f);
  if (!head.ok()) return head.status();
  if (f.stream <= last_peer_stream_) return protocol("stream id not increasing");
  last_peer_stream_ = f.stream;
  // Always decode: the header context is shared, even by a stream refused below.
  auto fields = header_decoder_.decode(head->header_block);
  if (!fields.ok()) return fields.status();
  if (goaway_sent_ || streams_.size() >= options_.max_streams) {
    (void)proto::write_reset(out_, f.stream, ResetReason::kRefused);
    return Status::Ok();
  }
  Stream& st = streams_[f.stream];
  st.send_window = peer_stream_window_;
  st.recv_window = options_.stream_window;
  st.remote_end = f.end_stream();
  handler_.on_request(f.stream, head->held, *fields, f.end_stream());
  return Status::Ok();
}

Status Session::on_response_frame(const Frame& f) {
  if (!options_.client) return protocol("RESPONSE sent to the agent");
  auto head = proto::parse_response(f);
  if (!head.ok()) return head.status();
  if (f.stream >= next_stream_id_) return protocol("RESPONSE on a stream never opened");
  auto fields = header_decoder_.decode(head->header_block);
  if (!fields.ok()) return fields.status();
  Stream* st = find(f.stream);
  if (st == nullptr) return Status::Ok();                       // Reset here meanwhile.
  const bool interim = proto::is_interim_status(head->status);  // The codec checked its form.
  if (st->head_seen) {
    stream_error(f.stream, ResetReason::kProtocol);
    return Status::Ok();
  }
  if (!interim) {
    st->head_seen = true;
    st->remote_end = f.end_stream();
  }
  handler_.on_response(f.stream, head->status, head->mode, *fields, f.end_stream());
  close_if_done(f.stream);
  return Status::Ok();
}

Status Session::on_data_frame(const Frame& f) {
  const uint32_t len = static_cast<uint32_t>(f.payload.size());
  if (len > recv_conn_window_) return protocol("connection flow-control window exceeded");
  recv_conn_window_ -= len;
  Stream* st = find(f.stream);
  if (st == nullptr) {
    const bool never_opened =
        options_.client ? f.stream >= next_stream_id_ : f.stream > last_peer_stream_;
    if (never_opened) return protocol("DATA on a stream never opened");
    grant_connection(len);  // A closed stream's bytes still count: give them back.
    return Status::Ok();
  }
  if (st->remote_end || (options_.client && !st->head_seen)) {
    grant_connection(len);
    stream_error(f.stream, ResetReason::kProtocol);
    return Status::Ok();
  }
  if (len > st->recv_window) {
    grant_connection(len);
    stream_error(f.stream, ResetReason::kFlowControl);
    return Status::Ok();
  }
  st->recv_window -= len;
  st->recv_unconsumed += len;
  st->remote_end = f.end_stream();
  handler_.on_data(f.stream, f.payload, f.end_stream());
  close_if_done(f.stream);
  return Status::Ok();
}

Status Session::on_trailers_frame(const Frame& f) {
  auto fields = header_decoder_.decode(f.payload);
  if (!fields.ok()) return fields.status();
  Stream* st = find(f.stream);
  if (st == nullptr) return Status::Ok();
  if (st->remote_end || (options_.client && !st->head_seen)) {
    stream_error(f.stream, ResetReason::kProtocol);
    return Status::Ok();
  }
  st->remote_end = true;
  handler_.on_trailers(f.stream, *fields);
  close_if_done(f.stream);
  return Status::Ok();
}

Status Session::on_window_update_frame(const Frame& f) {
  auto inc = proto::parse_window_update(f);
  if (!inc.ok()) {
    if (f.stream == 0) return inc.status();
    stream_error(f.stream, ResetReason::kProtocol);
    return Status::Ok();
  }
  if (f.stream == 0) {
    send_conn_window_ += *inc;
    if (send_conn_window_ > kMaxWindow) return protocol("connection window over 2^31 - 1");
    handler_.on_send_window(0);
    return Status::Ok();
  }
  Stream* st = find(f.stream);
  if (st == nullptr) return Status::Ok();
  st->send_window += *inc;
  if (st->send_window > kMaxWindow) {
    stream_error(f.stream, ResetReason::kFlowControl);
    return Status::Ok();
  }
  handler_.on_send_window(f.stream);
  return Status::Ok();
}

Status Session::on_settings_frame(const Frame& f) {
  if (f.flags & proto::kFlagAck) return Status::Ok();
  auto settings = proto::parse_settings(f);
  if (!settings.ok()) return settings.status();
  settings_received_ = true;
  bool grew = false;
  for (const proto::Setting& s : *settings) {
    switch (s.id) {
      case proto::SettingId::kMaxFramePayload:
        peer_max_frame_payload_ = s.value;
        break;
      case proto::SettingId::kInitialStreamWindow: {
        // RFC 9113 §6.9.2: a new initial window shifts every open stream's window.
        const int64_t delta = int64_t{s.value} - peer_stream_window_;
        for (auto& [id, st] : streams_) st.send_window += delta;
        peer_stream_window_ = s.value;
        grew = grew || delta > 0;
        break;
      }
      case proto::SettingId::kMaxConcurrentStreams:
        peer_max_streams_ = s.value;
        break;
      case proto::SettingId::kMaxHeaderBlock:
        peer_max_header_block_ = s.value;
        break;
    }
  }
  (void)proto::write_settings_ack(out_);
  if (grew) handler_.on_send_window(0);
  return Status::Ok();
}

Status Session::on_goaway_frame(const Frame& f) {
  auto g = proto::parse_goaway(f);
  if (!g.ok()) return g.status();
  goaway_received_ = true;
  goaway_last_stream_ = std::min(goaway_last_stream_, g->last_stream);
  if (options_.client) {
    // Streams above the last one will never be processed: fail them now, retryable.
    std::vector<uint32_t> refused;
    for (const auto& [id, st] : streams_) {
      if (id > goaway_last_stream_) refused.push_back(id);
    }
    std::sort(refused.begin(), refused.end());
    for (uint32_t id : refused) {
      recv_conn_unacked_ += streams_[id].recv_unconsumed;
      forget(id);
      handler_.on_stream_reset(id, ResetReason::kRefused);
    }
  }
  handler_.on_goaway(g->last_stream, g->code);
  return Status::Ok();
}

// ---- Flow control -------------------------------------------------------------------------

void Session::grant_connection(uint32_t n) {
  recv_conn_unacked_ += n;
  if (recv_conn_unacked_ >= options_.connection_window / 2 && !failed_) {
    (void)proto::write_window_update(out_, 0, recv_conn_unacked_);
    recv_conn_window_ += recv_conn_unacked_;
    recv_conn_unacked_ = 0;
  }
}

void Session::consume(uint32_t stream, size_t n) {
  Stream* st = find(stream);
  if (st == nullptr || n == 0) return;
  const uint32_t taken = static_cast<uint32_t>(std::min<size_t>(n, st->recv_unconsumed));
  st->recv_unconsumed -= taken;
  grant_connection(taken);
  if (st->remote_end || failed_) return;
  st->recv_unacked += taken;
  if (st->recv_unacked >= options_.stream_window / 2) {
    (void)proto::write_window_update(out_, stream, st->recv_unacked);
    st->recv_window += st->recv_unacked;
    st->recv_unacked = 0;
  }
}

size_t Session::send_window(uint32_t stream) const {
  auto it = streams_.find(stream);
  if (it == streams_.end()) return 0;
  const int64_t w = std::min(it->second.send_window, send_conn_window_);
  return w > 0 ? static_cast<size_t>(w) : 0;
}

// ---- Sending ------------------------------------------------------------------------------

// Checks the block will fit the peer's limits before compressing it: once compressed in the
// shared stream a block must be sent, or the peer's decoder falls out of step.
Status Session::encode_fields(std::span<const HeaderField> fields) {
  size_t plain = 8;
  for (const HeaderField& f : fields) plain += f.name.size() + f.value.size() + 12;
  const size_t compressed_bound = plain + plain / 128 + 64;
  if (plain > peer_max_header_block_ ||
      compressed_bound + 1 + 16 * proto::kMaxHeldVersions > peer_max_frame_payload_) {
    return Status(Code::kTooLarge, "header fields over the peer's limit");
  }
  block_.clear();
  const Status s = header_encoder_.encode(fields, block_);
  if (s.code() == Code::kInternal) return fail(s);  // The history is broken.
  return s;
}

Result<uint32_t> Session::submit_request(std::span<const VersionId> held,
                                         std::span<const HeaderField> fields, bool end_stream) {
  if (!options_.client) return Status(Code::kInternal, "the agent does not open streams");
  if (failed_ || draining())
    return Status(Code::kClosed, "tunnel is draining", Side::kTunnel, true);
  if (streams_.size() >= peer_max_streams_) {
    return Status(Code::kRefused, "agent's stream limit reached", Side::kTunnel, true);
  }
  if (next_stream_id_ > proto::kMaxStreamId) {
    return Status(Code::kClosed, "stream ids exhausted", Side::kTunnel, true);
  }
  if (held.size() > proto::kMaxHeldVersions) held = held.first(proto::kMaxHeldVersions);
  COILGUN_TRY(encode_fields(fields));
  const uint32_t id = next_stream_id_;
  next_stream_id_ += 2;
  (void)proto::write_request(out_, id, held, block_, end_stream);
  Stream& st = streams_[id];
  st.send_window = peer_stream_window_;
  st.recv_window = options_.stream_window;
  st.local_end = end_stream;
  return id;
}

Status Session::submit_response(uint32_t stream, uint16_t status, BodyMode mode,
                                std::span<const HeaderField> fields, bool end_stream) {
  if (options_.client) return Status(Code::kInternal, "the edge does not respond");
  Stream* st = find(stream);
  if (st == nullptr) return Status(Code::kClosed, "stream is gone", Side::kTunnel);
  if (st->head_seen) return Status(Code::kInternal, "response already sent");
  const bool interim = proto::is_interim_status(status);
  // Checked before the fields enter the shared header stream: a frame not written after its
  // block was encoded would put the peer's decoder out of step.
  if (interim ? (mode != BodyMode::kNone || end_stream)
              : (mode == BodyMode::kNone && !end_stream)) {
    return Status(Code::kInternal, "body mode and END_STREAM do not fit the status");
  }
  COILGUN_TRY(encode_fields(fields));
  st = find(stream);
  if (st == nullptr) return Status(Code::kClosed, "stream is gone", Side::kTunnel);
  (void)proto::write_response(out_, stream, status, mode, block_, end_stream);
  if (interim) return Status::Ok();
  st->head_seen = true;
  st->local_end = end_stream;
  close_if_done(stream);
  return Status::Ok();
}

Result<size_t> Session::send_data(uint32_t stream, std::span<const uint8_t> data, bool end_stream) {
  Stream* st = find(stream);
  if (st == nullptr || failed_) return Status(Code::kClosed, "stream is gone", Side::kTunnel);
  if (st->local_end) return Status(Code::kInternal, "stream already ended");
  const int64_t window = std::min(st->send_window, send_conn_window_);
  const size_t taken = window <= 0 ? 0 : std::min(static_cast<size_t>(window), data.size());
  st->queued.insert(st->queued.end(), data.begin(), data.begin() + static_cast<long>(taken));
  st->send_window -= static_cast<int64_t>(taken);
  send_conn_window_ -= static_cast<int64_t>(taken);
  queued_bytes_ += taken;
  const bool ends = end_stream && taken == data.size();
  if (ends) {
    st->end_queued = true;
    st->local_end = true;
  }
  if (taken > 0 || ends) queue_turn(stream, *st);
  return taken;
}

Status Session::submit_trailers(uint32_t stream, std::span<const HeaderField> fields) {
  Stream* st = find(stream);
  if (st == nullptr || failed_) return Status(Code::kClosed, "stream is gone", Side::kTunnel);
  if (st->local_end) return Status(Code::kInternal, "stream already ended");
  if (st->in_turn) {
    // DATA still queued: the trailers follow it (take_slice).
    for (const HeaderField& f : fields) st->trailers.emplace_back(f.name, f.value);
    st->trailers_queued = true;
    st->local_end = true;
    return Status::Ok();
  }
  COILGUN_TRY(encode_fields(fields));
  (void)proto::write_trailers(out_, stream, block_);
  st = find(stream);
  if (st != nullptr) {
    st->local_end = true;
    close_if_done(stream);
  }
  return Status::Ok();
}

void Session::reset(uint32_t stream, ResetReason reason) {
  Stream* st = find(stream);
  if (st == nullptr) return;
  if (!failed_) (void)proto::write_reset(out_, stream, reason);
  grant_connection(st->recv_unconsumed);
  forget(stream);
}

void Session::reset_after_data(uint32_t stream) {
  Stream* st = find(stream);
  if (st == nullptr) return;
  if (st->drained()) return reset(stream, ResetReason::kCancel);
  st->reset_when_drained = true;
}

void Session::stream_error(uint32_t stream, ResetReason reason) {
  reset(stream, reason);
  handler_.on_stream_reset(stream, reason);
}

void Session::close_if_done(uint32_t id) {
  Stream* st = find(id);
  if (st == nullptr || !st->local_end || !st->remote_end || !st->drained()) return;
  grant_connection(st->recv_unconsumed);
  streams_.erase(id);
}

void Session::goaway(GoawayCode code, std::string_view debug) {
  if (goaway_sent_ || failed_) return;
  goaway_sent_ = true;
  (void)proto::write_goaway(out_, options_.client ? 0 : last_peer_stream_, code, debug);
}

// ---- Time ---------------------------------------------------------------------------------

void Session::expect_answer(uint64_t now_ms) {
  if (failed_ || options_.answer_timeout_ms == 0 || answer_due_ms_ != UINT64_MAX) return;
  now_ms_ = now_ms;
  answer_due_ms_ = now_ms + options_.answer_timeout_ms;
  if (!ping_outstanding_) {
    (void)proto::write_ping(out_, now_ms, false);
    ping_sent_ms_ = now_ms;
    ping_outstanding_ = true;
  }
}

Status Session::on_timeout(uint64_t now_ms) {
  if (failed_) return Status::Ok();
  now_ms_ = now_ms;
  if (now_ms >= answer_due_ms_) {
    return fail(Status(Code::kTimeout, "tunnel peer sent nothing after a request", Side::kTunnel));
  }
  if (options_.ping_interval_ms == 0) return Status::Ok();
  if (ping_outstanding_) {
    // Dead only when nothing moved either way for the whole timeout: a ping or its answer may
    // queue behind DATA on a slow link that is otherwise alive.
    const uint64_t heard = std::max({ping_sent_ms_, last_received_ms_, last_written_ms_});
    if (now_ms - heard >= options_.ping_timeout_ms) {
      return fail(
          Status(Code::kTimeout, "tunnel peer sent nothing, pings unanswered", Side::kTunnel));
    }
    return Status::Ok();
  }
  if (now_ms >= ping_due_ms()) {
    (void)proto::write_ping(out_, now_ms, false);
    ping_sent_ms_ = now_ms;
    ping_outstanding_ = true;
  }
  return Status::Ok();
}

uint64_t Session::ping_due_ms() const {
  const uint64_t interval = options_.ping_interval_ms;
  const uint64_t quiet = options_.client ? interval : 2 * interval;
  const uint64_t due = std::max(next_ping_ms_, last_received_ms_ + quiet);
  const uint64_t step = std::max<uint64_t>(1, interval / 8);
  return (due + step - 1) / step * step;
}

uint64_t Session::next_timeout_ms() const {
  if (failed_) return UINT64_MAX;
  if (options_.ping_interval_ms == 0) return answer_due_ms_;
  return std::min(answer_due_ms_, ping_outstanding_ ? std::max({ping_sent_ms_, last_received_ms_,
                                                                last_written_ms_}) +
                                                          options_.ping_timeout_ms
                                                    : ping_due_ms());
}

}  // namespace coilgun::tunnel
