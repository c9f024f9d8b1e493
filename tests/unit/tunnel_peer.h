#pragma once
// Test helpers for driving a daemon's worker on a real loop: run_until() (run the loop until a
// condition holds, bounded in time, no sleeps), and TunnelPeer, the far end of one tunnel
// connection whose streams the test answers (or asks) by hand.
//
// TunnelPeer is the repo's own tunnel::Connection (TLS over a loopback socket, a
// tunnel::Session) with a recording Session::Handler: as the agent it accepts the edge's
// connection (listen()), as the edge it dials the agent (dial()). Every event the session
// delivers is recorded per stream; the test then answers with session() and flush(), outside
// the connection's callbacks.
//
// Header-only on purpose: tests/unit/**/*_test.cc are globbed into the unit binary, and a
// helper .cc beside them would not be compiled. Threads: the loop's only.

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "common/net/loop.h"
#include "common/tls/tls.h"
#include "common/tunnel/connection.h"
#include "proto/delta.h"
#include "tests/unit/test_pages.h"

namespace coilgun::test {

// Runs |loop| one turn at a time until |done()| holds or |limit| passed. Returns done().
template <typename Pred>
bool run_until(uv::Loop& loop, Pred done,
               std::chrono::milliseconds limit = std::chrono::seconds(5)) {
  bool expired = false;
  uv::Timer guard(loop);
  guard.start(limit, [&expired] { expired = true; });
  while (!done() && !expired) uv_run(loop.get(), UV_RUN_ONCE);
  guard.stop();
  return done();
}

inline std::span<const uint8_t> bytes_of(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

inline std::string text_of(std::span<const uint8_t> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

// The far end of one tunnel connection, answered by the test.
class TunnelPeer : public tunnel::Session::Handler, public tunnel::Connection::Owner {
 public:
  using Fields = std::vector<std::pair<std::string, std::string>>;

  // What one stream carried to this side.
  struct Stream {
    // Agent side: the request.
    std::vector<proto::VersionId> held;
    Fields request;
    bool request_end = false;
    // Edge side: the response heads (interim ones first), in order.
    std::vector<uint16_t> statuses;
    proto::BodyMode mode = proto::BodyMode::kNone;
    Fields response;
    // Both: body bytes, whether the peer ended its side, and a reset it sent.
    std::vector<uint8_t> data;
    bool ended = false;
    bool reset = false;
    proto::ResetReason reset_reason = proto::ResetReason::kCancel;

    // The value of field |name| (lower case) of the request or response, or "".
    std::string field(const std::string& name) const {
      for (const auto& [n, v] : request) {
        if (n == name) return v;
      }
      for (const auto& [n, v] : response) {
        if (n == name) return v;
      }
      return "";
    }
  };

  TunnelPeer(uv::Loop& loop, std::shared_ptr<const tls::TlsContext> tls)
      : loop_(loop), tls_(std::move(tls)), listener_(loop), connector_(loop) {}
  ~TunnelPeer() override = default;

  // Agent side: accepts one connection on 127.0.0.1, any port. Returns the port.
  uint16_t listen() {
    REQUIRE(listener_
                .listen("127.0.0.1", 0,
                        [this](std::unique_ptr<uv::TcpStream> s) {
                          auto session = tls::TlsSession::server(tls_);
                          REQUIRE(session.ok());
                          conn_ = std::make_unique<tunnel::Connection>(
                              loop_, std::move(s), std::move(session.value()), options(false),
                              *this, *this, std::chrono::milliseconds(3000));
                        })
                .ok());
    return listener_.port();
  }

  // Edge side: dials the agent at 127.0.0.1:|port|, checking its certificate for 127.0.0.1.
  void dial(uint16_t port) {
    connector_.connect("127.0.0.1", port, std::chrono::milliseconds(3000),
                       [this](Result<std::unique_ptr<uv::TcpStream>> r) {
                         REQUIRE(r.ok());
                         auto session = tls::TlsSession::client(tls_, "127.0.0.1");
                         REQUIRE(session.ok());
                         conn_ = std::make_unique<tunnel::Connection>(
                             loop_, std::move(r.value()), std::move(session.value()), options(true),
                             *this, *this, std::chrono::milliseconds(3000));
                       });
  }

  bool ready() const { return ready_; }
  bool closed() const { return closed_; }
  tunnel::Session& session() { return conn_->session(); }
  void flush() { conn_->flush(); }
  void close() { conn_->close(Status(Code::kClosed, "test closes the tunnel")); }

  // Stream ids in the order their requests came (agent side).
  const std::vector<uint32_t>& requests() const { return requests_; }
  Stream& stream(uint32_t id) { return streams_[id]; }
  bool has(uint32_t id) const { return streams_.count(id) != 0; }

  // Edge side: opens a stream with |fields| naming |held| versions. Returns its id.
  // |end|: false leaves the stream open for a request body.
  uint32_t request(const Fields& fields, std::vector<proto::VersionId> held = {}, bool end = true) {
    std::vector<proto::HeaderField> views;
    for (const auto& [n, v] : fields) views.push_back({n, v});
    auto id = session().submit_request(held, views, end);
    REQUIRE(id.ok());
    flush();
    streams_[*id];
    return *id;
  }

  // Agent side answers.
  void respond(uint32_t id, uint16_t status, proto::BodyMode mode, const Fields& fields, bool end) {
    std::vector<proto::HeaderField> views;
    for (const auto& [n, v] : fields) views.push_back({n, v});
    REQUIRE(session().submit_response(id, status, mode, views, end).ok());
    flush();
  }
  void send(uint32_t id, std::span<const uint8_t> data, bool end) {
    auto taken = session().send_data(id, data, end);
    REQUIRE(taken.ok());
    REQUIRE(*taken == data.size());  // The tests' bodies fit the initial windows.
    flush();
  }
  void reset(uint32_t id, proto::ResetReason why) {
    session().reset(id, why);
    flush();
  }

  // tunnel::Session::Handler
  void on_request(uint32_t stream, std::span<const proto::VersionId> held,
                  std::span<const proto::HeaderField> fields, bool end_stream) override {
    Stream& s = streams_[stream];
    s.held.assign(held.begin(), held.end());
    for (const auto& f : fields) s.request.emplace_back(std::string(f.name), std::string(f.value));
    s.request_end = end_stream;
    requests_.push_back(stream);
  }
  void on_response(uint32_t stream, uint16_t status, proto::BodyMode mode,
                   std::span<const proto::HeaderField> fields, bool end_stream) override {
    Stream& s = streams_[stream];
    s.statuses.push_back(status);
    s.mode = mode;
    s.response.clear();
    for (const auto& f : fields) s.response.emplace_back(std::string(f.name), std::string(f.value));
    if (end_stream) s.ended = true;
  }
  void on_data(uint32_t stream, std::span<const uint8_t> data, bool end_stream) override {
    Stream& s = streams_[stream];
    s.data.insert(s.data.end(), data.begin(), data.end());
    if (end_stream) s.ended = true;
    session().consume(stream, data.size());
  }
  void on_trailers(uint32_t stream, std::span<const proto::HeaderField>) override {
    streams_[stream].ended = true;
  }
  void on_stream_reset(uint32_t stream, proto::ResetReason reason) override {
    Stream& s = streams_[stream];
    s.reset = true;
    s.reset_reason = reason;
  }

  // tunnel::Connection::Owner
  void on_ready(tunnel::Connection&) override { ready_ = true; }
  void on_closed(tunnel::Connection&, Status) override {
    closed_ = true;
    loop_.defer_delete(std::move(conn_));  // Inside its own callback.
  }

 private:
  static tunnel::SessionOptions options(bool client) {
    tunnel::SessionOptions o;
    o.client = client;
    o.stream_window = 1 << 20;
    return o;
  }

  uv::Loop& loop_;
  std::shared_ptr<const tls::TlsContext> tls_;
  uv::TcpListener listener_;
  uv::TcpConnector connector_;
  std::unique_ptr<tunnel::Connection> conn_;
  std::map<uint32_t, Stream> streams_;
  std::vector<uint32_t> requests_;
  bool ready_ = false;
  bool closed_ = false;
};

// The context of |r|, which must have been built.
inline std::shared_ptr<const tls::TlsContext> context(
    Result<std::shared_ptr<const tls::TlsContext>> r) {
  REQUIRE(r.ok());
  return *r;
}

// Version |version| (0, 1, ...) of the news page |seed| (test_pages.h): each version one
// PageGen::edit() step and a new timestamp away from the one before, so a delta between two
// near versions is small.
inline std::string news_page(uint32_t seed, int version = 0) {
  PageGen gen(seed);
  std::vector<std::string> blocks = gen.blocks(30);
  for (int v = 0; v < version; ++v) gen.edit(blocks);
  return PageGen::render(blocks, "2026-11-22 10:" + std::to_string(10 + version));
}

// A payload as the agent codes it: the full body (|base| null) or a delta against |base|.
inline std::vector<uint8_t> code_payload(std::span<const uint8_t> body,
                                         std::span<const uint8_t> base = {}, bool keep = true) {
  proto::DeltaEncoder encoder;
  std::vector<uint8_t> payload;
  if (base.empty()) {
    REQUIRE(encoder.encode(nullptr, body, proto::VersionId::of(body), payload).ok());
  } else {
    const proto::PreparedBase prepared(base);
    REQUIRE(encoder.encode(&prepared, body, proto::VersionId::of(body), payload).ok());
    REQUIRE(encoder.last_stats().kind == proto::DeltaKind::kDelta);
  }
  if (keep) proto::mark_keep_as_base(payload);
  return payload;
}

}  // namespace coilgun::test
