// origin::Exchange: one stream from an edge, answered from the backend.
//
// What is real and what is simulated. An Exchange cannot be made on its own: it takes its
// EdgeLink (which owns a tunnel::Connection over TLS and a socket) and, through it, its
// AgentWorker (the backend pool, the delta encoder, the base policy). So the smallest real
// assembly is driven: a real AgentWorker (with a Shared built here: a MemoryVersionStore as the
// agent sets it up, a metrics registry, settings naming the backend) on a real loop, accepting
// a real tunnel over TLS on 127.0.0.1, and a real backend: an http::Server of the repo's own on
// loopback answering fixed pages. Simulated: the edge. The near end of the tunnel is a
// TunnelPeer (tests/unit/tunnel_peer.h), the repo's own tunnel::Connection and Session with a
// handler that records what comes back; the test opens each stream by hand with the fields and
// held version ids an edge would send, and decodes the payloads with proto::DeltaDecoder.
//
// Every wait runs the loop until a condition holds (run_until), bounded in time; no sleeps.

#include "origin/exchange.h"

#include <catch2/catch.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/http/server.h"
#include "common/obs/metrics.h"
#include "common/store/memory_store.h"
#include "origin/worker.h"
#include "tests/unit/common/tls/test_certs.h"
#include "tests/unit/tunnel_peer.h"

using namespace coilgun;
using namespace std::chrono_literals;
using namespace coilgun::test;
using proto::BodyMode;
using proto::ResetReason;
using proto::VersionId;

namespace {

// The backend: GET /page answers |page| as text/html; /error a 500; /image bytes of an image;
// /broken closes the connection without an answer; /slow never answers. Records each
// request's head.
class Backend : public http::Server {
 public:
  explicit Backend(uv::Loop& loop) : http::Server(loop, http::ServerOptions{}) {}
  std::string page;
  std::string image;
  std::vector<http::RequestHead> requests;

  void on_request(http::ServerConnection& c) override {
    requests.push_back(c.request());
    const std::string& target = c.request().target;
    if (target == "/broken") return c.close();
    if (target == "/slow") return;
    if (target == "/error") return reply(c, 500, "text/plain", "boom\n");
    if (target == "/image") return reply(c, 200, "image/png", image);
    reply(c, 200, "text/html", page);
  }
  void on_request_body(http::ServerConnection&, std::span<const uint8_t>) override {}
  void on_request_end(http::ServerConnection&) override {}

 private:
  static void reply(http::ServerConnection& c, int status, const std::string& type,
                    const std::string& body) {
    http::ResponseHead head;
    head.status = status;
    head.headers.push_back({"Content-Type", type});
    head.headers.push_back({"ETag", "\"v\""});
    REQUIRE(c.respond_head(head, http::ResponseFraming::kContentLength, body.size()).ok());
    c.respond_body(bytes_of(body));  // A failure would arrive as on_abort.
    c.respond_end();
  }
};

// A port nothing listens on (bound once, then closed).
uint16_t closed_port(uv::Loop& loop) {
  uv::TcpListener l(loop);
  REQUIRE(l.listen("127.0.0.1", 0, [](std::unique_ptr<uv::TcpStream>) {}).ok());
  return l.port();
}

std::shared_ptr<const origin::Settings> origin_settings(const TestCerts& certs,
                                                        uint16_t backend_port) {
  config::OriginConfig c;
  c.listen = {"127.0.0.1", 0};
  c.backend = {"127.0.0.1", backend_port};
  return std::make_shared<const origin::Settings>(
      origin::Settings{c, context(tls::TlsContext::server(certs.server_files()))});
}

// An AgentWorker with a Shared of its own and a backend, with one tunnel up from a TunnelPeer
// edge.
struct OriginRig {
  uv::Loop& loop;
  TestCerts certs;
  Backend backend;
  uint16_t backend_port;
  MemoryVersionStore store;
  metrics::Registry registry;
  daemon::Metrics metrics;
  daemon::Reloadable<origin::Settings> settings;
  origin::Shared shared;
  origin::AgentWorker worker;
  TunnelPeer edge;

  // |backend_up|: false points the agent at a port nothing listens on.
  explicit OriginRig(uv::Loop& l, bool backend_up = true)
      : loop(l),
        backend(l),
        backend_port(backend_up ? listen(backend) : closed_port(l)),
        metrics(registry),
        settings(origin_settings(certs, backend_port)),
        shared{settings, store, metrics, {}, log::ReportLimiter(), {}, {}},
        worker(l, shared, 0),
        edge(l, context(tls::TlsContext::client(certs.client_files()))) {
    auto port = worker.start(0);
    REQUIRE(port.ok());
    edge.dial(*port);
    REQUIRE(run_until(loop, [this] { return edge.ready(); }));
  }
  ~OriginRig() { backend.close_all(); }

  static uint16_t listen(Backend& b) {
    REQUIRE(b.listen("127.0.0.1", 0).ok());
    return b.port();
  }

  // The agent's cache key for |target| on host example.com.
  static std::string key(const std::string& target) { return "default\nexample.com\n" + target; }

  // Opens a stream for GET |target| naming |held|, and waits for its answer (its end or a
  // reset).
  TunnelPeer::Stream& get(const std::string& target, std::vector<VersionId> held = {},
                          TunnelPeer::Fields extra = {}) {
    TunnelPeer::Fields fields = {
        {":method", "GET"}, {":scheme", "http"},    {":authority", "example.com"},
        {":path", target},  {"user-agent", "test"}, {"x-forwarded-for", "192.0.2.7"}};
    fields.insert(fields.end(), extra.begin(), extra.end());
    const uint32_t id = edge.request(fields, std::move(held));
    REQUIRE(run_until(loop, [&] { return edge.stream(id).ended || edge.stream(id).reset; }));
    return edge.stream(id);
  }

  uint64_t errors(std::string_view reason) { return metrics.errors.with({reason}).value(); }
};

// A coded answer, decoded as the edge would.
struct Decoded {
  proto::DeltaHeader header;
  std::string body;
};

Decoded decode(const TunnelPeer::Stream& s, std::optional<std::string> base = std::nullopt) {
  REQUIRE(s.mode == BodyMode::kCoded);
  auto header = proto::parse_delta(s.data);
  REQUIRE(header.ok());
  proto::DeltaDecoder decoder;
  std::optional<std::span<const uint8_t>> base_bytes;
  if (base) base_bytes = bytes_of(*base);
  std::vector<uint8_t> out;
  const Status st = decoder.decode(*header, base_bytes, 64u << 20, out);
  REQUIRE(st.ok());
  return {*header, text_of(out)};
}

}  // namespace

TEST_CASE("An agent answers a first request with the full body, coded, and keeps it as a base",
          "[origin][exchange]") {
  uv::Loop loop;
  {
    OriginRig rig(loop);
    rig.backend.page = news_page(11);
    const TunnelPeer::Stream& s = rig.get("/page");
    REQUIRE_FALSE(s.reset);
    REQUIRE(s.statuses == std::vector<uint16_t>{200});
    CHECK(s.field("content-type") == "text/html");
    CHECK(s.field("etag") == "\"v\"");
    CHECK(s.field("content-length").empty());  // The edge sets it from the rebuilt body.

    const Decoded d = decode(s);
    CHECK(d.header.kind == proto::DeltaKind::kFull);
    CHECK(d.header.keep_as_base);
    CHECK(d.header.id == VersionId::of(bytes_of(rig.backend.page)));
    CHECK(d.body == rig.backend.page);
    CHECK(s.data.size() < rig.backend.page.size());  // zstd, not the page as it is.

    CHECK(rig.store.held(OriginRig::key("/page")) == std::vector<VersionId>{d.header.id});
    CHECK(rig.metrics.delta_full.value() == 1);

    // What the backend was asked.
    REQUIRE(rig.backend.requests.size() == 1);
    const http::RequestHead& req = rig.backend.requests[0];
    CHECK(req.method == "GET");
    CHECK(req.target == "/page");
    CHECK(http::find(req.headers, "host") == "example.com");
    CHECK(http::find(req.headers, "accept-encoding") == "identity");
    CHECK(http::find(req.headers, "via") == "1.1 coilgun");
    CHECK(http::find(req.headers, "user-agent") == "test");
    CHECK(http::find(req.headers, "x-forwarded-for") == "192.0.2.7");
  }
  CHECK(loop.close() == 0);
}

TEST_CASE("An agent answers a changed page with a delta against the base the edge names",
          "[origin][exchange]") {
  uv::Loop loop;
  {
    OriginRig rig(loop);
    const std::string v1 = news_page(12), v2 = news_page(12, 2);
    REQUIRE(v1 != v2);
    rig.backend.page = v1;
    const Decoded first = decode(rig.get("/page"));
    REQUIRE(first.body == v1);
    const VersionId id1 = first.header.id;

    rig.backend.page = v2;
    const TunnelPeer::Stream& s = rig.get("/page", {id1});
    REQUIRE_FALSE(s.reset);
    CHECK(s.statuses == std::vector<uint16_t>{200});
    const Decoded d = decode(s, v1);
    CHECK(d.header.kind == proto::DeltaKind::kDelta);
    CHECK(d.header.base == id1);
    CHECK(d.header.id == VersionId::of(bytes_of(v2)));
    CHECK(d.body == v2);
    CHECK(s.data.size() < v2.size() / 4);  // Only what changed crossed.
    // The edge listed the first base back: the new version may become the next base.
    CHECK(d.header.keep_as_base);
    CHECK(rig.store.held(OriginRig::key("/page")) == std::vector<VersionId>{d.header.id, id1});
    CHECK(rig.metrics.delta_delta.value() == 1);
  }
  CHECK(loop.close() == 0);
}

TEST_CASE("An agent answers in full when the edge names only versions it does not hold",
          "[origin][exchange]") {
  uv::Loop loop;
  {
    OriginRig rig(loop);
    rig.backend.page = news_page(13);
    const std::string other = news_page(99);
    const TunnelPeer::Stream& s = rig.get("/page", {VersionId::of(bytes_of(other))});
    const Decoded d = decode(s);
    CHECK(d.header.kind == proto::DeltaKind::kFull);
    CHECK(d.body == rig.backend.page);
  }
  CHECK(loop.close() == 0);
}

TEST_CASE("An agent never codes against a version another cache key holds", "[origin][exchange]") {
  uv::Loop loop;
  {
    OriginRig rig(loop);
    const std::string v1 = news_page(14), v2 = news_page(14, 1);
    rig.store.put(OriginRig::key("/other"), Blob::make(test::to_bytes(v1)));
    rig.backend.page = v2;
    const Decoded d = decode(rig.get("/page", {VersionId::of(bytes_of(v1))}));
    CHECK(d.header.kind == proto::DeltaKind::kFull);
    CHECK(d.body == v2);
  }
  CHECK(loop.close() == 0);
}

TEST_CASE("An agent answers a backend's 500 with its body, kept as no base", "[origin][exchange]") {
  uv::Loop loop;
  {
    OriginRig rig(loop);
    const TunnelPeer::Stream& s = rig.get("/error");
    REQUIRE_FALSE(s.reset);
    CHECK(s.statuses == std::vector<uint16_t>{500});
    const Decoded d = decode(s);
    CHECK(d.body == "boom\n");
    CHECK_FALSE(d.header.keep_as_base);
    CHECK(rig.store.held(OriginRig::key("/error")).empty());
    CHECK(rig.store.stats().inserts == 0);
  }
  CHECK(loop.close() == 0);
}

TEST_CASE("An agent streams a body that is not text, as it is", "[origin][exchange]") {
  uv::Loop loop;
  {
    OriginRig rig(loop);
    rig.backend.image.resize(5000);
    for (size_t i = 0; i < rig.backend.image.size(); ++i) {
      rig.backend.image[i] = static_cast<char>(i * 13);
    }
    const TunnelPeer::Stream& s = rig.get("/image");
    REQUIRE_FALSE(s.reset);
    CHECK(s.statuses == std::vector<uint16_t>{200});
    CHECK(s.mode == BodyMode::kStream);
    CHECK(s.field("content-type") == "image/png");
    CHECK(s.field("content-length") == "5000");
    CHECK(text_of(s.data) == rig.backend.image);
    CHECK(rig.store.stats().inserts == 0);
  }
  CHECK(loop.close() == 0);
}

TEST_CASE("An agent refuses a request whose Content-Length is not a number, before the backend",
          "[origin][exchange]") {
  // Before http::parse_content_length, strtoull read "1x" as 1 and forwarded a one-byte body.
  uv::Loop loop;
  {
    OriginRig rig(loop);
    const uint32_t id = rig.edge.request({{":method", "POST"},
                                          {":scheme", "http"},
                                          {":authority", "example.com"},
                                          {":path", "/form"},
                                          {"content-length", "1x"}},
                                         {}, /*end=*/false);
    REQUIRE(run_until(loop, [&] { return rig.edge.stream(id).reset; }));
    CHECK(rig.edge.stream(id).reset_reason == ResetReason::kProtocol);
    CHECK(rig.edge.stream(id).statuses.empty());
    CHECK(rig.backend.requests.empty());
    CHECK(rig.errors("bad_content_length") == 1);
  }
  CHECK(loop.close() == 0);
}

TEST_CASE("An agent resets the stream as upstream_failed when the backend closes unanswered",
          "[origin][exchange]") {
  uv::Loop loop;
  {
    OriginRig rig(loop);
    const TunnelPeer::Stream& s = rig.get("/broken");
    CHECK(s.reset);
    CHECK(s.reset_reason == ResetReason::kUpstreamFailed);
    CHECK(s.statuses.empty());
    CHECK(rig.backend.requests.size() == 1);  // A new connection: not retried.
    CHECK(rig.errors("backend_failed") == 1);
  }
  CHECK(loop.close() == 0);
}

TEST_CASE("An agent retries once on a fresh connection when a reused one fails unanswered",
          "[origin][exchange]") {
  uv::Loop loop;
  {
    OriginRig rig(loop);
    rig.backend.page = news_page(15);
    REQUIRE(decode(rig.get("/page")).body == rig.backend.page);
    const TunnelPeer::Stream& s = rig.get("/broken");
    CHECK(s.reset);
    CHECK(s.reset_reason == ResetReason::kUpstreamFailed);
    // /page, then /broken on the kept-alive connection and once more on a new one.
    CHECK(rig.backend.requests.size() == 3);
  }
  CHECK(loop.close() == 0);
}

TEST_CASE("An agent resets the stream as upstream_refused when the backend refuses connections",
          "[origin][exchange]") {
  uv::Loop loop;
  {
    OriginRig rig(loop, /*backend_up=*/false);
    const TunnelPeer::Stream& s = rig.get("/page");
    CHECK(s.reset);
    CHECK(s.reset_reason == ResetReason::kUpstreamRefused);
    CHECK(s.statuses.empty());
    CHECK(rig.errors("backend_refused") == 1);
  }
  CHECK(loop.close() == 0);
}

TEST_CASE(
    "An agent resets the stream as upstream_timeout when the backend is slower than the route "
    "allows",
    "[origin][exchange]") {
  uv::Loop loop;
  {
    OriginRig rig(loop);
    const TunnelPeer::Stream& s = rig.get("/slow", {}, {{":backend-timeout", "50"}});
    CHECK(s.reset);
    CHECK(s.reset_reason == ResetReason::kUpstreamTimeout);
    CHECK(s.statuses.empty());
    CHECK(rig.backend.requests.size() == 1);
    CHECK(rig.errors("backend_timeout") == 1);
  }
  CHECK(loop.close() == 0);
}
