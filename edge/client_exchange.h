#pragma once
// One client request, carried over a tunnel stream to the origin agent its host routes to.
//
// A request is routed by its host (an absolute-form target's authority, else the Host field; an
// HTTP/1.0 request without Host takes the default route) to its agent and sent on the least
// busy tunnel with the ids of the versions this edge holds for its cache key. A coded response
// is rebuilt from the delta, checked against its version id, stored as the newest version and
// served; a base the edge no longer holds, or a body that fails its check, is fetched again in
// full, never served. Streamed responses go to the client as they arrive, and the tunnel
// window is granted back only as the client socket takes them. A response without Date gets
// one (RFC 9110 §6.6.1). Interim responses (103 Early Hints) are passed to HTTP/1.1 clients.
// An upgrade request (WebSocket) is sent with ":upgrade" on a stream left open; after the
// agent's 101 the stream is a byte pipe between the client's socket and the backend's, paced
// by the tunnel's windows both ways (PROTOCOL.md §2, REQUEST).
//
// A route may name several agents: the request goes to the one its cache key picks among those
// with a tunnel up (EdgeWorker::pick_pool). When its tunnel is lost before any of the answer
// reached the client, a safe request without a body (GET, HEAD, OPTIONS, TRACE) is sent once
// more, to the next agent up (else on another tunnel of the same agent); a stream the agent refused
// unprocessed (it was draining) is sent once more whatever its method. When none of the route's
// agents has a tunnel up and the route has a fallback URL, the request goes there directly
// (DirectFetch, direct_fetch.h; "direct" in the access log and metrics), an upgrade request
// excepted.
//
// Failures and their answers: no route for the Host 421; no tunnel up and no fallback 502 at
// once (reason "tunnel_down"); tunnel lost mid-request 502 ("tunnel_lost"); backend refused
// the agent's connection 502 ("backend_refused"), broke it or answered malformed 502
// ("backend_failed"); the fallback refused 502 ("direct_failed"); backend or exchange too
// slow 504.
//
// Ownership: made by its worker for a client connection's request and owned by that connection
// (http::ServerExchange), which hears the client's events for it and deletes it on a later loop
// turn once the exchange is over there. It finishes (finish(): logged, detached from its tunnel
// stream, counted off with EdgeWorker::exchange_done()) no later than that, and may be told of
// client events after it finished (an early answer before the rest of the request), which it
// ignores. Its store calls are cancelled at finish(); its tunnel link holds it only while it is
// attached to a stream. Threads: its worker's loop.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "common/http/server.h"
#include "common/net/loop.h"
#include "common/obs/log.h"
#include "common/store/version_store.h"
#include "common/tunnel/http_fields.h"
#include "edge/agent_pool.h"
#include "edge/config.h"
#include "edge/direct_fetch.h"
#include "edge/worker.h"
#include "proto/delta.h"

namespace coilgun::edge {

// One client request, carried over a tunnel stream.
class ClientExchange : public http::ServerExchange, private DirectFetch::Sink {
 public:
  ClientExchange(EdgeWorker& worker, http::ServerConnection& c);

  void begin();

  // http::ServerExchange: the client connection's events for this exchange.
  void on_request_body(std::span<const uint8_t> data) override { on_client_body(data); }
  void on_request_end() override { on_client_end(); }
  void on_abort() override { on_client_abort(); }
  void on_writable() override { on_client_writable(); }
  void on_upgraded_data(std::span<const uint8_t> data) override { on_client_body(data); }
  void on_upgraded_end() override;

  void on_response(uint16_t status, proto::BodyMode mode,
                   std::span<const proto::HeaderField> fields, bool end);
  void on_data(std::span<const uint8_t> data, bool end);
  void on_trailers(std::span<const proto::HeaderField> fields);
  void on_reset(proto::ResetReason reason);
  void on_window();
  void on_tunnel_lost();
  // From the AgentPool this exchange waits on (AgentPool::wait): a tunnel is up, or its
  // connect failed.
  void on_tunnel_ready();
  void on_tunnel_failed();

 private:
  void on_client_body(std::span<const uint8_t> data);
  void on_client_end();
  void on_client_abort();
  void on_client_writable();
  void open_stream(bool full);
  void submit(std::span<const proto::VersionId> held);
  // No agent of the route is up: the fallback, or 502.
  void no_tunnel();
  // The tunnel went before any of the answer reached the client: true if the request was sent
  // again to another agent.
  bool retry_elsewhere();
  void start_direct();
  // DirectFetch::Sink: the fallback's answer.
  void direct_interim(http::ResponseHead&& head) override;
  void direct_head(http::ResponseHead&& head) override;
  void direct_body(std::span<const uint8_t> data) override;
  void direct_end() override;
  void direct_failed(Status why, std::string detail) override;
  void direct_writable() override;
  void on_interim(uint16_t status, std::span<const proto::HeaderField> fields);
  void send_body();
  void rebuild();
  void serve(BlobRef body);
  void refetch(const char* why);
  void fail(int status, const char* reason);
  void count();
  void finish();
  void release_stream();
  void write_head(http::ResponseFraming framing, uint64_t length);
  void arm_timeout(std::chrono::milliseconds delay);
  void route_options(const config::EdgeRoute& route, tunnel::TunnelRequest& request);
  void progress() { last_progress_ms_ = worker_.loop().now_ms(); }

  EdgeWorker& worker_;
  Shared& shared_;
  http::ServerConnection* client_;
  const config::EdgeRoute* route_ = nullptr;  // In settings_.
  AgentPool* pool_ = nullptr;   // The chosen agent's tunnels (the worker's, for its life).
  TunnelLink* link_ = nullptr;  // The tunnel the stream is on, from submit().
  uint32_t stream_ = 0;

  std::string method_, target_, authority_, host_, key_;
  // For the access line; request_id_ also goes to the backend as X-Request-ID.
  std::string client_ip_, user_agent_, request_id_;
  const char* protocol_ = "";
  tunnel::FieldList fields_;  // What goes to the agent (kept for a refetch or a retry).
  bool has_body_ = false;     // The stream carries request bytes (a body, or what follows a 101).
  bool client_body_done_ = false;
  bool expects_continue_ = false;  // The client waits for 100 Continue: sent once submitted.
  // The protocol the client asked to switch to (ServerConnection::upgrade_requested()); empty:
  // none. Sent as ":upgrade"; the stream stays open for the new protocol's bytes.
  std::string upgrade_;
  std::vector<uint8_t> body_out_;  // Request body waiting for the tunnel window.

  uint16_t status_ = 0;
  proto::BodyMode mode_ = proto::BodyMode::kNone;
  std::vector<http::Header> response_headers_;
  bool head_sent_ = false;
  std::vector<uint8_t> payload_;           // Coded: the delta payload as it arrives.
  std::optional<uint64_t> stream_length_;  // A streamed body's Content-Length.
  uint64_t unconsumed_ = 0;      // Streamed bytes written to the client, not granted back.
  uint64_t client_took_ms_ = 0;  // Since then unconsumed_ bytes wait for the client to take.
  bool refetched_ = false;
  bool retried_ = false;
  bool lost_ = false;  // A tunnel was lost under this request (retry_elsewhere).
  bool finished_ = false;
  bool counted_ = false;
  log::DeltaResult result_ = log::DeltaResult::kNone;
  uint64_t body_bytes_ = 0, link_bytes_ = 0;
  std::string error_;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  double upstream_ms_ = -1;
  std::shared_ptr<const Settings> settings_;  // As of begin(), for the whole exchange.
  uv::Timer timeout_;  // request_timeout: fires after that long without progress.
  std::chrono::milliseconds idle_limit_{0};  // The route's request_timeout, or [limits]'.
  uint64_t last_progress_ms_ = 0;
  Pending held_lookup_;  // The store naming the versions held, before the stream opens.
  std::vector<proto::VersionId> held_;  // What they named, kept while waiting for a tunnel.
  std::string agent_;  // For the access line: the agent the stream went to (or, for 502s, tried).
  bool waiting_ = false;                 // In pool_'s waiters (AgentPool::wait).
  Pending base_lookup_;                  // The store finding the base a delta names.
  std::unique_ptr<DirectFetch> direct_;  // Sent to the route's fallback instead of a tunnel.
};

}  // namespace coilgun::edge
