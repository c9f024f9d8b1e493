#pragma once
// One stream from an edge: the edge's request, the backend exchange, the answer.
//
// The request goes to the backend over its worker's keep-alive pool, asking for identity
// encoding; the answer goes back in one of two ways:
//   coded   the body is buffered (up to delta.max_body) and sent as one delta payload
//           (proto/delta.h): a delta against the newest version the edge said it holds and
//           this agent holds under the same cache key, or the full body in zstd. GET
//           responses with textual, identity-encoded bodies.
//   stream  everything else, and any body that outgrows the limit: the bytes go through as
//           they arrive, paced by the tunnel's flow control (the backend socket is not read
//           while the edge cannot take more), so nothing large is ever held whole.
// Backend failures become stream resets the edge turns into 502 (refused, broken) or 504
// (too slow). Which coded bodies are kept as bases is the process's BasePolicy's call.
//
// Ownership: its EdgeLink owns it, and deletes it on a later loop turn once it is finished.
// Callbacks that may come after that (the backend pool) check alive_; its store lookup is
// cancelled at finish(). While it lives (until finish()) it holds its key's BasePolicy state.
// Threads: its worker's loop.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "common/http/client.h"
#include "common/net/loop.h"
#include "common/obs/log.h"
#include "common/store/version_store.h"
#include "common/tunnel/http_fields.h"
#include "origin/base_policy.h"
#include "origin/edge_link.h"
#include "origin/worker.h"
#include "proto/delta.h"

namespace coilgun::origin {

// One stream: the edge's request, the backend exchange, the answer.
class Exchange : public http::ClientHandler, public uv::Deferred {
 public:
  Exchange(EdgeLink& link, uint32_t stream, std::span<const proto::VersionId> held,
           std::span<const proto::HeaderField> fields, bool end_stream);
  ~Exchange() override { *alive_ = false; }

  void start();
  void on_request_data(std::span<const uint8_t> data, bool end_stream);
  void on_send_window() { pump(); }
  // Abandons the exchange, counted and logged as |why|: the edge reset the stream (the client
  // went away: "client_gone") or the tunnel closed ("tunnel_lost").
  void cancel(const char* why);

  // http::ClientHandler
  void on_interim(http::ResponseHead&& head) override;
  void on_response_head(http::ResponseHead&& head) override;
  void on_response_body(std::span<const uint8_t> data) override;
  void on_response_end() override;
  void on_error(Status status) override;
  void on_writable() override;

 private:
  enum class Mode { kPending, kNone, kCoded, kStream };

  void acquire(bool fresh);
  void send_request();
  void respond_coded();
  void encode(BlobRef base);
  void watch_trickle(std::chrono::milliseconds delay);
  void switch_to_stream(const char* why);
  void pump();
  void fail(proto::ResetReason reason, const char* why);
  void drop_backend();
  void finish();
  Status submit(proto::BodyMode mode, bool end_stream);
  const char* choose_mode(const http::ResponseHead& head);
  void switch_protocols();

  EdgeLink& link_;
  AgentWorker& worker_;
  Shared& shared_;
  uint32_t stream_;
  std::vector<proto::VersionId> held_;
  http::RequestHead request_;
  std::string host_, key_;
  http::BodyFraming request_framing_ = http::BodyFraming::kNone;
  uint64_t request_length_ = 0;
  bool malformed_ = false;   // No :method or :path: start() refuses it.
  bool bad_length_ = false;  // The edge's Content-Length is not a number: start() refuses it.
  bool request_end_;
  // The edge's ":upgrade": the request asks to switch to this protocol (the stream stays open
  // for the new protocol's bytes, held until the backend's 101). Empty: no upgrade.
  std::string upgrade_;
  bool switched_ = false;            // The backend answered 101: the stream is a byte pipe.
  int interims_ = 0;                 // Interim responses passed on.
  std::vector<uint8_t> early_body_;  // Request bytes that came before the backend did.
  uint64_t unconsumed_ = 0;          // Forwarded request bytes not yet granted back.

  std::unique_ptr<http::ClientConnection> conn_;
  bool retried_ = false;
  // From the edge's route: how long to wait for the response head (else
  // backend_pool.response_timeout), and whether private responses are delta-coded.
  std::optional<std::chrono::milliseconds> backend_timeout_;
  bool private_deltas_ = true;
  uv::Timer timeout_;
  uv::Timer trickle_;          // delta.stream_after: a coded body that stalls goes on as a stream.
  uint64_t last_body_ms_ = 0;  // Loop time of the head or the last body piece (coded mode).
  std::shared_ptr<const Settings> settings_;  // As of the request, for the whole exchange.
  BasePolicy::Hold key_hold_;                 // Counts this exchange as running, until finish().
  Pending base_lookup_;                       // The store finding a base the edge holds.

  Mode mode_ = Mode::kPending;
  int status_ = 0;
  tunnel::FieldList response_fields_;
  std::vector<uint8_t> body_;     // Coded: the whole body. Stream: bytes not yet sent.
  std::vector<uint8_t> payload_;  // Coded: the delta payload.
  size_t sent_ = 0;
  bool backend_done_ = false;
  bool finished_ = false;
  bool cancelled_ = false;            // Not a request answered: left out of requests_total.
  const char* error_ = nullptr;       // Why it failed, for the access line.
  const char* stream_why_ = nullptr;  // Why the body streamed, for the access line.
  proto::VersionId id_;
  log::DeltaResult result_ = log::DeltaResult::kNone;
  uint64_t body_bytes_ = 0;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  double upstream_ms_ = -1;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace coilgun::origin
