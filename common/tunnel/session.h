#pragma once
// The tunnel session: one connection's streams, flow control, pings and drain, following
// proto/PROTOCOL.md. It does no I/O: the owner feeds it the plaintext the peer sent
// (receive), sends what it produces (take_output), and tells it the time. Both sides of a
// connection can be wired together in memory, which is how the tests drive it.
//
// Flow control counts DATA payload bytes (RFC 9113 §5.2 semantics). Receiving: each stream
// may be sent at most our stream window, the connection our connection window; the consumer
// calls consume() as it takes bytes, and WINDOW_UPDATEs grant them back once half a window
// has been taken (batched). Sending: send_data() takes only what both windows allow and says
// how much; on_send_window() says when to try again.
//
// Output order (issue #10: PING answers queued behind megabytes of DATA on a slow link got
// the link declared dead). Every frame but DATA goes out first, in the order it was made (so
// header blocks reach the peer's decoder in the order they were encoded). DATA the windows let
// through waits in its stream's queue, and take_output() hands out at most a budget of it, a
// slice per stream in turn, so a small response is not stuck behind a large one and the owner
// can keep what it has queued on the socket small. Trailers wait for their stream's DATA. A
// stream whose queue still holds DATA stays open until it is out.
//
// A link is dead when it carried nothing at all for ping_timeout_ms while a ping was
// unanswered: no byte came from the peer, and the owner reported none of ours acknowledged
// (written()). Not merely when the answer is slow: on a slow, busy link the ping itself, or
// its answer, queues behind DATA in the network.
//
// Pings cost an idle tunnel as little as they can (issue #13: a thousand idle agents): a side
// pings only when nothing came from the peer for the ping interval (the agent: twice that, so
// an idle tunnel carries the edge's ping and its answer, not a ping each way), and a ping's
// deadline is rounded up to a step of an eighth of the interval on the loop's clock, so one
// worker's idle tunnels ping in one loop turn rather than one wake-up each.
//
// Re-entrancy: handler methods run inside receive() and on_timeout(); they may call any
// method of the session (send, reset, respond) but must not destroy it — defer that to a
// later loop turn.

#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "proto/frame.h"
#include "proto/headers.h"
#include "proto/status.h"

namespace coilgun::tunnel {

using proto::BodyMode;
using proto::GoawayCode;
using proto::HeaderField;
using proto::ResetReason;
using proto::VersionId;

// The connection window every side assumes before the peer raises it (PROTOCOL.md §3).
inline constexpr uint32_t kInitialConnectionWindow = 1 << 20;
// The stream window every side assumes before SETTINGS say otherwise. Windows are never set
// below it, so a peer that has not yet seen our SETTINGS never overruns us.
inline constexpr uint32_t kDefaultStreamWindow = 256 * 1024;

struct SessionOptions {
  bool client = true;  // The edge: opens streams. The agent: accepts them.
  uint32_t max_frame_payload = proto::kDefaultMaxFramePayload;  // Largest frame we accept.
  uint32_t stream_window = kDefaultStreamWindow;                // Receive window of each stream.
  uint32_t connection_window = 16u << 20;                       // Receive window of the connection.
  uint32_t max_streams = 1000;                                  // Concurrent streams we accept.
  size_t max_header_block = 64 * 1024;  // Decompressed, per block we accept.
  uint64_t ping_interval_ms = 10000;    // 0: never ping.
  uint64_t ping_timeout_ms = 30000;     // Unanswered this long: dead link.
  // After expect_answer(): nothing at all from the peer this long means a dead link (0: off).
  uint64_t answer_timeout_ms = 0;
};

class Session {
 public:
  class Handler {
   public:
    virtual ~Handler() = default;
    // Agent side: a stream opened with a request. |held| and |fields| are valid during the
    // call only. |end_stream|: no request body follows.
    virtual void on_request(uint32_t stream, std::span<const VersionId> held,
                            std::span<const HeaderField> fields, bool end_stream) {
      (void)stream, (void)held, (void)fields, (void)end_stream;
    }
    // Edge side: the response head of a stream this side opened. An interim head (1xx other
    // than 101: mode kNone, no end) may come first, any number of times; the final one follows.
    virtual void on_response(uint32_t stream, uint16_t status, BodyMode mode,
                             std::span<const HeaderField> fields, bool end_stream) {
      (void)stream, (void)status, (void)mode, (void)fields, (void)end_stream;
    }
    // Body bytes (valid during the call). Call consume() when they are taken.
    virtual void on_data(uint32_t stream, std::span<const uint8_t> data, bool end_stream) = 0;
    // Trailer fields; the stream's receiving side is over.
    virtual void on_trailers(uint32_t stream, std::span<const HeaderField> fields) {
      (void)stream, (void)fields;
    }
    // The stream is gone: the peer reset it, the session reset it because the peer broke a
    // rule on it, or a GOAWAY said it will never be processed (kRefused). Not called for
    // streams the owner resets with reset().
    virtual void on_stream_reset(uint32_t stream, ResetReason reason) = 0;
    // A window grew: |stream| may send more; stream 0 means every stream may.
    virtual void on_send_window(uint32_t stream) { (void)stream; }
    // The peer is draining: it will process nothing above |last_stream|.
    virtual void on_goaway(uint32_t last_stream, GoawayCode code) { (void)last_stream, (void)code; }
    // A PING of ours was answered after |ms| (rtt_ms() says the same from now on).
    virtual void on_rtt(uint64_t ms) { (void)ms; }
  };

  // Queues this side's SETTINGS and connection WINDOW_UPDATE. |handler| must outlive it.
  Session(const SessionOptions& options, Handler& handler, uint64_t now_ms);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Takes bytes from the peer and delivers the events they complete. An error is fatal for
  // the connection: a GOAWAY saying why has been queued; flush the output and close.
  Status receive(std::span<const uint8_t> data, uint64_t now_ms);

  // Appends the frames produced so far to |out|: every frame but DATA, then DATA frames of up
  // to about |budget| bytes in all, a slice of each stream with DATA queued in turn.
  void take_output(std::vector<uint8_t>& out, size_t budget = SIZE_MAX);
  // Bytes take_output() would hand out with no budget.
  size_t output_bytes() const { return out_.size() + queued_bytes_; }

  // Edge: opens a stream. Errors: kClosed (draining, or the session failed), kRefused (the
  // peer's stream limit is reached), kTooLarge / kMalformed (header fields).
  Result<uint32_t> submit_request(std::span<const VersionId> held,
                                  std::span<const HeaderField> fields, bool end_stream);
  // Agent: answers a stream with its response head, or first with an interim one (1xx other
  // than 101, BodyMode::kNone, !end_stream).
  Status submit_response(uint32_t stream, uint16_t status, BodyMode mode,
                         std::span<const HeaderField> fields, bool end_stream);
  // Queues as much of |data| as both send windows allow, in frames no larger than the
  // peer accepts, and returns how much. With |end_stream| the stream's sending side ends
  // once all of |data| is taken (an empty |data| just ends it). kClosed if the stream is gone.
  Result<size_t> send_data(uint32_t stream, std::span<const uint8_t> data, bool end_stream);
  // Ends the sending side with trailer fields.
  Status submit_trailers(uint32_t stream, std::span<const HeaderField> fields);
  // Bytes |stream| may send right now.
  size_t send_window(uint32_t stream) const;
  // Abandons a stream (RESET to the peer, DATA still queued dropped); no further events for it.
  void reset(uint32_t stream, ResetReason reason);
  // This side answered in full but the peer's side is still open (an answer before the whole
  // request body, a pipe whose backend closed): once the DATA this side queued is out, RESET
  // (cancel) tells the peer to stop. Events for the stream may still come until then.
  void reset_after_data(uint32_t stream);
  // The consumer took |n| bytes of |stream|'s DATA: grants them back to the peer.
  void consume(uint32_t stream, size_t n);
  // Starts a drain: GOAWAY with the last stream this side processed; no new streams.
  void goaway(GoawayCode code, std::string_view debug);

  // The peer's TCP last acknowledged this side's bytes at |when_ms|: the link carries them, so
  // it is alive even while the peer has nothing to send (the owner asks the kernel).
  void written(uint64_t when_ms) { last_written_ms_ = std::max(last_written_ms_, when_ms); }

  // Edge: a request went out at |now_ms| and its answer is awaited. Unless something comes
  // from the peer within answer_timeout_ms (a PING goes now if none is outstanding, so a slow
  // answer does not count), on_timeout() declares the link dead: a request on a tunnel that
  // died silently fails in about that long, not after the ping timeout.
  void expect_answer(uint64_t now_ms);

  // Runs timers due at |now_ms| (pings). kTimeout if the peer stopped answering pings: the
  // connection is dead.
  Status on_timeout(uint64_t now_ms);
  // When on_timeout() next has work (UINT64_MAX: never).
  uint64_t next_timeout_ms() const;

  std::optional<uint64_t> rtt_ms() const { return rtt_ms_; }
  size_t open_streams() const { return streams_.size(); }
  bool stream_open(uint32_t stream) const { return streams_.count(stream) != 0; }
  // This side may still send on |stream| (it is open and this side did not end it).
  bool sending(uint32_t stream) const {
    auto it = streams_.find(stream);
    return it != streams_.end() && !it->second.local_end;
  }
  // The peer may still send on |stream| (it is open and the peer did not end it).
  bool receiving(uint32_t stream) const {
    auto it = streams_.find(stream);
    return it != streams_.end() && !it->second.remote_end;
  }
  bool draining() const { return goaway_sent_ || goaway_received_; }
  // The peer's SETTINGS arrived: the first frame every peer sends, so the peer took this
  // connection (an agent refusing the edge's certificate sends none).
  bool settings_received() const { return settings_received_; }
  bool failed() const { return failed_; }

 private:
  struct Stream {
    int64_t send_window = 0;       // May go negative after the peer lowers its window.
    uint32_t recv_window = 0;      // What the peer may still send us on this stream.
    uint32_t recv_unconsumed = 0;  // Delivered to the handler, not consumed yet.
    uint32_t recv_unacked = 0;     // Consumed, not yet granted back.
    bool local_end = false;        // We ended our side (END_STREAM or trailers, maybe queued).
    bool remote_end = false;       // The peer did.
    bool head_seen = false;        // The response head was received (edge) or sent (agent).
    // Sending: DATA accepted by send_data() and not yet framed out, from |queued_at| on.
    std::vector<uint8_t> queued;
    size_t queued_at = 0;
    bool end_queued = false;  // END_STREAM goes with the last queued byte.
    bool in_turn = false;     // In turn_ (has DATA, an end or trailers to send).
    // Trailers submitted while DATA was queued: encoded and sent once it is out.
    std::vector<std::pair<std::string, std::string>> trailers;
    bool trailers_queued = false;
    bool reset_when_drained = false;  // reset_after_data().
    bool drained() const { return !in_turn; }
  };

  Status on_frame(const proto::Frame& f);
  Status on_request_frame(const proto::Frame& f);
  Status on_response_frame(const proto::Frame& f);
  Status on_data_frame(const proto::Frame& f);
  Status on_trailers_frame(const proto::Frame& f);
  Status on_window_update_frame(const proto::Frame& f);
  Status on_settings_frame(const proto::Frame& f);
  Status on_goaway_frame(const proto::Frame& f);
  Status fail(Status status);
  void close_if_done(uint32_t id);
  // Frames out one slice of |id|'s queue into |out|; returns the bytes written.
  size_t take_slice(uint32_t id, Stream& st, size_t budget, std::vector<uint8_t>& out);
  // When the next ping is due if none is outstanding (see the top of this file).
  uint64_t ping_due_ms() const;
  void queue_turn(uint32_t id, Stream& st);
  void forget(uint32_t id);
  // Counts |n| received bytes as taken at the connection level; grants in batches.
  void grant_connection(uint32_t n);
  void stream_error(uint32_t id, ResetReason reason);
  Status encode_fields(std::span<const HeaderField> fields);
  Stream* find(uint32_t id);

  SessionOptions options_;
  Handler& handler_;
  proto::FrameDecoder decoder_;
  proto::HeaderEncoder header_encoder_;
  proto::HeaderDecoder header_decoder_;
  std::vector<uint8_t> in_;     // Bytes of a frame not complete yet.
  std::vector<uint8_t> out_;    // Frames other than DATA not taken yet, in order.
  std::deque<uint32_t> turn_;   // Streams with DATA queued, in the order they get a slice.
  size_t queued_bytes_ = 0;     // DATA payload queued in all streams.
  std::vector<uint8_t> block_;  // Scratch for header blocks.
  std::unordered_map<uint32_t, Stream> streams_;

  // Peer's settings (what we may send).
  uint32_t peer_max_frame_payload_ = proto::kDefaultMaxFramePayload;
  uint32_t peer_stream_window_ = kDefaultStreamWindow;
  uint32_t peer_max_streams_ = 1000;
  size_t peer_max_header_block_ = 64 * 1024;

  int64_t send_conn_window_ = kInitialConnectionWindow;
  uint32_t recv_conn_window_;  // What the peer may still send on the connection.
  uint32_t recv_conn_unacked_ = 0;

  uint32_t next_stream_id_ = 1;    // Edge: next id to open.
  uint32_t last_peer_stream_ = 0;  // Agent: highest id the peer opened.
  bool goaway_sent_ = false;
  bool goaway_received_ = false;
  uint32_t goaway_last_stream_ = proto::kMaxStreamId;
  bool failed_ = false;
  bool settings_received_ = false;

  uint64_t now_ms_ = 0;
  uint64_t last_received_ms_ = 0;        // When bytes last came from the peer.
  uint64_t last_written_ms_ = 0;         // When the owner last reported output taken by the socket.
  uint64_t answer_due_ms_ = UINT64_MAX;  // expect_answer(): something must come by then.
  uint64_t next_ping_ms_;                // No ping before then (a ping was answered lately).
  uint64_t ping_sent_ms_ = 0;
  bool ping_outstanding_ = false;
  std::optional<uint64_t> rtt_ms_;
};

}  // namespace coilgun::tunnel
