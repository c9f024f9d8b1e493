// edge::ClientExchange: one client request carried to an agent and its answer back.
//
// What is real and what is simulated. A ClientExchange cannot be made on its own: it takes its
// EdgeWorker (the http::Server whose connection carries the request, the store, the decoder),
// and its stream lives on a TunnelLink, which owns a tunnel::Connection over TLS and a socket.
// So the smallest real assembly is driven: a real EdgeWorker (with a Shared built here: a
// MemoryVersionStore, a metrics registry, settings with one default route) on a real loop,
// listening on 127.0.0.1, whose AgentPool dials a real tunnel over TLS on loopback. Simulated:
// the agent. The far end of the tunnel is a TunnelPeer (tests/unit/tunnel_peer.h), the repo's
// own tunnel::Connection and Session with a handler that records each request; the test answers
// each stream by hand (full payloads, deltas, streamed bodies, resets, a lost tunnel), coding
// payloads with proto::DeltaEncoder as the agent would. The client is a raw socket writing
// request bytes and reading the response bytes, which the test parses itself.
//
// Every wait runs the loop until a condition holds (run_until), bounded in time; no sleeps.

#include "edge/client_exchange.h"

#include <catch2/catch.hpp>
#include <string>
#include <utility>
#include <vector>

#include "common/obs/metrics.h"
#include "common/store/cache_key.h"
#include "common/store/memory_store.h"
#include "edge/worker.h"
#include "tests/unit/common/tls/test_certs.h"
#include "tests/unit/tunnel_peer.h"

using namespace coilgun;
using namespace std::chrono_literals;
using namespace coilgun::test;
using proto::BodyMode;
using proto::ResetReason;
using proto::VersionId;

namespace {

// An HTTP/1.1 response as the client read it.
struct Response {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool complete = false;  // Its framing says it is all here.
  size_t extra = 0;       // Bytes after its end.

  // The value of the only field named |name| (any case); "" when there is none, "<n times>"
  // when there are several.
  std::string header(const std::string& name) const {
    std::string found;
    int n = 0;
    for (const auto& [k, v] : headers) {
      if (http::iequals(k, name)) {
        found = v;
        ++n;
      }
    }
    return n <= 1 ? found : "<" + std::to_string(n) + " times>";
  }
};

// Parses the first response in |raw|; |eof|: the server closed the connection after it.
Response parse_response(const std::string& raw, bool eof) {
  Response r;
  const size_t head_end = raw.find("\r\n\r\n");
  if (head_end == std::string::npos || raw.compare(0, 9, "HTTP/1.1 ") != 0) return r;
  r.status = std::stoi(raw.substr(9, 3));
  size_t at = raw.find("\r\n") + 2;
  while (at < head_end) {
    const size_t end = raw.find("\r\n", at);
    const std::string line = raw.substr(at, end - at);
    const size_t colon = line.find(':');
    std::string value = line.substr(colon + 1);
    while (!value.empty() && value[0] == ' ') value.erase(0, 1);
    r.headers.emplace_back(line.substr(0, colon), value);
    at = end + 2;
  }
  const std::string rest = raw.substr(head_end + 4);
  if (const std::string cl = r.header("content-length"); !cl.empty()) {
    const size_t n = std::stoul(cl);
    r.body = rest.substr(0, n);
    r.complete = rest.size() >= n;
    if (r.complete) r.extra = rest.size() - n;
  } else if (http::iequals(r.header("transfer-encoding"), "chunked")) {
    size_t p = 0;
    while (true) {
      const size_t line_end = rest.find("\r\n", p);
      if (line_end == std::string::npos) break;
      const size_t n = std::stoul(rest.substr(p, line_end - p), nullptr, 16);
      if (n == 0) {
        r.complete = rest.compare(line_end, 4, "\r\n\r\n") == 0;
        if (r.complete) r.extra = rest.size() - (line_end + 4);
        break;
      }
      if (rest.size() < line_end + 2 + n + 2) break;
      r.body += rest.substr(line_end + 2, n);
      p = line_end + 2 + n + 2;
    }
  } else {
    r.body = rest;
    r.complete = eof;
  }
  return r;
}

// A client on a raw socket: writes request bytes, collects what comes back.
struct Client : uv::TcpStream::Handler {
  uv::TcpConnector connector;
  std::unique_ptr<uv::TcpStream> stream;
  std::string received;
  bool eof = false;

  Client(uv::Loop& loop, uint16_t port, std::string request) : connector(loop) {
    connector.connect("127.0.0.1", port, 3000ms, [this, request](auto r) {
      REQUIRE(r.ok());
      stream = std::move(r.value());
      stream->set_handler(this);
      REQUIRE(stream->start_read().ok());
      REQUIRE(stream->write(std::vector<uint8_t>(request.begin(), request.end())).ok());
    });
  }
  Response response() const { return parse_response(received, eof); }
  void on_read(std::span<const uint8_t> d) override { received += text_of(d); }
  void on_eof() override { eof = true; }
  void on_error(Status) override { eof = true; }
};

std::string get(const std::string& target) {
  return "GET " + target + " HTTP/1.1\r\nHost: example.com\r\nUser-Agent: test\r\n\r\n";
}

// The edge's settings: listen on 127.0.0.1 (any port), one tunnel to the agent at
// 127.0.0.1:|agent_port| for every host.
std::shared_ptr<const edge::Settings> edge_settings(const TestCerts& certs, uint16_t agent_port) {
  config::EdgeConfig c;
  c.listen = {"127.0.0.1", 0};
  config::EdgeRoute route;
  route.agents = {{"127.0.0.1", agent_port}};
  route.agent_name = "127.0.0.1";
  c.default_route = route;
  c.tunnel.connections = 1;
  return std::make_shared<const edge::Settings>(
      edge::Settings{c, context(tls::TlsContext::client(certs.client_files()))});
}

// An EdgeWorker with a Shared of its own, whose one tunnel is up to a TunnelPeer agent.
struct EdgeRig {
  uv::Loop& loop;
  TestCerts certs;
  TunnelPeer agent;
  uint16_t agent_port;
  MemoryVersionStore store;
  metrics::Registry registry;
  daemon::Metrics metrics;
  daemon::Reloadable<edge::Settings> settings;
  edge::Shared shared;
  edge::EdgeWorker worker;
  uint16_t port = 0;

  explicit EdgeRig(uv::Loop& l)
      : loop(l),
        agent(l, context(tls::TlsContext::server(certs.server_files()))),
        agent_port(agent.listen()),
        metrics(registry),
        settings(edge_settings(certs, agent_port)),
        shared{settings, store, metrics, 1, {}, {}},
        worker(l, shared, 0) {
    auto p = worker.start(0);
    REQUIRE(p.ok());
    port = *p;
    REQUIRE(run_until(loop, [this] { return agent.ready() && shared.workers_ready == 1; }));
  }

  // The edge's cache key for |target| on host example.com.
  std::string key(const std::string& target) const {
    return CacheKey{"", "example.com", target}.str();
  }
  // The stream of the |n|th request the agent received (waits for it).
  uint32_t nth_request(size_t n) {
    REQUIRE(run_until(loop, [&] { return agent.requests().size() >= n; }));
    return agent.requests()[n - 1];
  }
  // Waits for |client|'s whole response (or the end of its connection).
  Response answer(Client& client) {
    REQUIRE(run_until(loop, [&] { return client.response().complete || client.eof; }));
    return client.response();
  }
  BlobRef held(const std::string& target, VersionId id) {
    return store.find(key(target), {&id, 1}, VersionStore::Want::kBytes);
  }
  uint64_t errors(std::string_view reason) { return metrics.errors.with({reason}).value(); }
};

const TunnelPeer::Fields kHtml = {{"content-type", "text/html; charset=utf-8"},
                                  {"cache-control", "max-age=0"}};

}  // namespace

TEST_CASE("An edge sends a GET on the tunnel with its pseudo-fields and serves the full body",
          "[edge][client_exchange]") {
  uv::Loop loop;
  {
    EdgeRig rig(loop);
    Client client(loop, rig.port, get("/news?x=1"));
    const uint32_t id = rig.nth_request(1);
    TunnelPeer::Stream& s = rig.agent.stream(id);
    CHECK(s.held.empty());  // The store holds nothing for the key yet.
    CHECK(s.request_end);
    CHECK(s.field(":method") == "GET");
    CHECK(s.field(":scheme") == "http");
    CHECK(s.field(":authority") == "example.com");
    CHECK(s.field(":path") == "/news?x=1");
    CHECK(s.field("user-agent") == "test");
    CHECK(s.field("x-forwarded-for") == "127.0.0.1");
    CHECK(s.field("host").empty());  // :authority carries it.

    const std::string body = news_page(1);
    rig.agent.respond(id, 200, BodyMode::kCoded, kHtml, false);
    rig.agent.send(id, code_payload(bytes_of(body)), true);

    const Response r = rig.answer(client);
    CHECK(r.status == 200);
    CHECK(r.header("content-type") == "text/html; charset=utf-8");
    CHECK(r.header("cache-control") == "max-age=0");
    CHECK(r.header("content-length") == std::to_string(body.size()));
    CHECK_FALSE(r.header("date").empty());  // RFC 9110 §6.6.1: the edge adds one.
    CHECK(r.body == body);
    CHECK(r.extra == 0);
    CHECK_FALSE(client.eof);  // Kept alive.

    // Kept as a version for the next request's delta.
    const VersionId v = VersionId::of(bytes_of(body));
    CHECK(rig.store.held(rig.key("/news?x=1")) == std::vector<VersionId>{v});
    BlobRef blob = rig.held("/news?x=1", v);
    REQUIRE(blob);
    CHECK(text_of(blob->bytes()) == body);
    CHECK(rig.metrics.delta_full.value() == 1);
  }
  CHECK(loop.close() == 0);
}

TEST_CASE("An edge serves a full body the agent does not keep as a base, without storing it",
          "[edge][client_exchange]") {
  uv::Loop loop;
  {
    EdgeRig rig(loop);
    Client client(loop, rig.port, get("/once"));
    const uint32_t id = rig.nth_request(1);
    const std::string body = news_page(2);
    rig.agent.respond(id, 200, BodyMode::kCoded, kHtml, false);
    rig.agent.send(id, code_payload(bytes_of(body), {}, /*keep=*/false), true);
    const Response r = rig.answer(client);
    CHECK(r.status == 200);
    CHECK(r.body == body);
    CHECK(rig.store.held(rig.key("/once")).empty());
    CHECK(rig.store.stats().inserts == 0);
  }
  CHECK(loop.close() == 0);
}

TEST_CASE("An edge names the base it holds and rebuilds the agent's delta against it",
          "[edge][client_exchange]") {
  uv::Loop loop;
  {
    EdgeRig rig(loop);
    const std::string v1 = news_page(3), v2 = news_page(3, 2);
    REQUIRE(v1 != v2);
    const VersionId id1 = VersionId::of(bytes_of(v1)), id2 = VersionId::of(bytes_of(v2));
    rig.store.put(rig.key("/"), Blob::make(test::to_bytes(v1)));

    Client client(loop, rig.port, get("/"));
    const uint32_t id = rig.nth_request(1);
    CHECK(rig.agent.stream(id).held == std::vector<VersionId>{id1});

    const std::vector<uint8_t> payload = code_payload(bytes_of(v2), bytes_of(v1));
    CHECK(payload.size() < v2.size() / 4);  // A delta, not the page.
    rig.agent.respond(id, 200, BodyMode::kCoded, kHtml, false);
    rig.agent.send(id, payload, true);

    const Response r = rig.answer(client);
    CHECK(r.status == 200);
    CHECK(r.header("content-length") == std::to_string(v2.size()));
    CHECK(r.body == v2);
    CHECK(r.extra == 0);
    // The new version is the newest; the base stays.
    CHECK(rig.store.held(rig.key("/")) == std::vector<VersionId>{id2, id1});
    BlobRef blob = rig.held("/", id2);
    REQUIRE(blob);
    CHECK(text_of(blob->bytes()) == v2);
    CHECK(rig.metrics.delta_delta.value() == 1);
    CHECK(rig.errors("refetch") == 0);
  }
  CHECK(loop.close() == 0);
}

TEST_CASE("An edge serves a whole delta whose tunnel closed while it looked up the base",
          "[edge][client_exchange]") {
  uv::Loop loop;
  {
    EdgeRig rig(loop);
    const std::string v1 = news_page(4, 1), v2 = news_page(4, 3);
    rig.store.put(rig.key("/"), Blob::make(test::to_bytes(v1)));

    Client client(loop, rig.port, get("/"));
    const uint32_t id = rig.nth_request(1);
    rig.agent.respond(id, 200, BodyMode::kCoded, kHtml, false);
    rig.agent.send(id, code_payload(bytes_of(v2), bytes_of(v1)), true);
    rig.agent.close();  // Right behind the payload's end: the base is looked up meanwhile.

    const Response r = rig.answer(client);
    CHECK(r.status == 200);
    CHECK(r.body == v2);
  }
  CHECK(loop.close() == 0);
}

TEST_CASE("An edge fetches in full a delta against a base it does not hold, never serving it",
          "[edge][client_exchange]") {
  uv::Loop loop;
  {
    EdgeRig rig(loop);
    const std::string v0 = news_page(4), v1 = news_page(4, 1), v2 = news_page(4, 3);
    const VersionId id1 = VersionId::of(bytes_of(v1)), id2 = VersionId::of(bytes_of(v2));
    rig.store.put(rig.key("/"), Blob::make(test::to_bytes(v1)));

    Client client(loop, rig.port, get("/"));
    const uint32_t first = rig.nth_request(1);
    CHECK(rig.agent.stream(first).held == std::vector<VersionId>{id1});
    // A delta against v0, which the edge never had.
    rig.agent.respond(first, 200, BodyMode::kCoded, kHtml, false);
    rig.agent.send(first, code_payload(bytes_of(v2), bytes_of(v0)), true);

    // Asked again, naming no base.
    const uint32_t second = rig.nth_request(2);
    CHECK(second != first);
    CHECK(rig.agent.stream(second).held.empty());
    CHECK(rig.agent.stream(second).field(":path") == "/");
    CHECK(client.received.empty());  // Nothing went to the client meanwhile.
    rig.agent.respond(second, 200, BodyMode::kCoded, kHtml, false);
    rig.agent.send(second, code_payload(bytes_of(v2)), true);

    const Response r = rig.answer(client);
    CHECK(r.status == 200);
    CHECK(r.body == v2);
    CHECK(rig.store.held(rig.key("/")) == std::vector<VersionId>{id2, id1});
    CHECK(rig.errors("refetch") == 1);
  }
  CHECK(loop.close() == 0);
}

TEST_CASE("An edge fetches in full a coded body that fails its check, and stores only the good one",
          "[edge][client_exchange]") {
  uv::Loop loop;
  {
    EdgeRig rig(loop);
    const std::string body = news_page(5);
    Client client(loop, rig.port, get("/checked"));
    const uint32_t first = rig.nth_request(1);
    std::vector<uint8_t> bad = code_payload(bytes_of(body));
    bad[1] ^= 0x01;  // The body id (bytes 1..16 of a full payload) no longer matches.
    rig.agent.respond(first, 200, BodyMode::kCoded, kHtml, false);
    rig.agent.send(first, bad, true);

    const uint32_t second = rig.nth_request(2);
    CHECK(rig.agent.stream(second).held.empty());
    CHECK(client.received.empty());
    rig.agent.respond(second, 200, BodyMode::kCoded, kHtml, false);
    rig.agent.send(second, code_payload(bytes_of(body)), true);

    const Response r = rig.answer(client);
    CHECK(r.status == 200);
    CHECK(r.body == body);
    CHECK(rig.store.held(rig.key("/checked")) ==
          std::vector<VersionId>{VersionId::of(bytes_of(body))});
    CHECK(rig.store.stats().inserts == 1);
  }
  CHECK(loop.close() == 0);
}

TEST_CASE("An edge asks again in full when the agent resets for a base it no longer holds",
          "[edge][client_exchange]") {
  uv::Loop loop;
  {
    EdgeRig rig(loop);
    const std::string v1 = news_page(6), v2 = news_page(6, 2);
    rig.store.put(rig.key("/"), Blob::make(test::to_bytes(v1)));
    Client client(loop, rig.port, get("/"));
    const uint32_t first = rig.nth_request(1);
    CHECK_FALSE(rig.agent.stream(first).held.empty());
    rig.agent.reset(first, ResetReason::kBaseMissing);

    const uint32_t second = rig.nth_request(2);
    CHECK(rig.agent.stream(second).held.empty());
    rig.agent.respond(second, 200, BodyMode::kCoded, kHtml, false);
    rig.agent.send(second, code_payload(bytes_of(v2)), true);
    const Response r = rig.answer(client);
    CHECK(r.status == 200);
    CHECK(r.body == v2);
    CHECK(rig.store.held(rig.key("/")).front() == VersionId::of(bytes_of(v2)));
  }
  CHECK(loop.close() == 0);
}

TEST_CASE("An edge answers a stream reset before the head with 502 or 504 and stores nothing",
          "[edge][client_exchange]") {
  struct Case {
    ResetReason reset;
    int status;
    std::string body;
  };
  const Case cases[] = {
      {ResetReason::kUpstreamFailed, 502, "Bad Gateway (backend_failed)\n"},
      {ResetReason::kUpstreamRefused, 502, "Bad Gateway (backend_refused)\n"},
      {ResetReason::kUpstreamTimeout, 504, "Gateway Timeout (backend_timeout)\n"},
      {ResetReason::kInternal, 502, "Bad Gateway (stream_reset)\n"},
  };
  uv::Loop loop;
  {
    EdgeRig rig(loop);
    size_t n = 0;
    for (const Case& c : cases) {
      INFO("reset " << proto::reset_reason_name(c.reset));
      Client client(loop, rig.port, get("/fails"));
      const uint32_t id = rig.nth_request(++n);
      rig.agent.reset(id, c.reset);
      const Response r = rig.answer(client);
      CHECK(r.status == c.status);
      CHECK(r.header("content-type") == "text/plain; charset=utf-8");
      CHECK(r.body == c.body);
      CHECK(r.extra == 0);
    }
    CHECK(rig.agent.requests().size() == 4);  // None was retried.
    CHECK(rig.store.held(rig.key("/fails")).empty());
    CHECK(rig.errors("backend_failed") == 1);
    CHECK(rig.errors("backend_refused") == 1);
    CHECK(rig.errors("backend_timeout") == 1);
    CHECK(rig.errors("stream_reset") == 1);
  }
  CHECK(loop.close() == 0);
}

TEST_CASE("An edge passes a streamed body through as it is and keeps no version of it",
          "[edge][client_exchange]") {
  uv::Loop loop;
  {
    EdgeRig rig(loop);
    std::string png(3000, '\0');
    for (size_t i = 0; i < png.size(); ++i) png[i] = static_cast<char>(i * 7);
    Client client(loop, rig.port, get("/logo.png"));
    const uint32_t id = rig.nth_request(1);
    rig.agent.respond(id, 200, BodyMode::kStream,
                      {{"content-type", "image/png"}, {"content-length", "3000"}}, false);
    rig.agent.send(id, bytes_of(std::string_view(png).substr(0, 1000)), false);
    rig.agent.send(id, bytes_of(std::string_view(png).substr(1000)), true);
    const Response r = rig.answer(client);
    CHECK(r.status == 200);
    CHECK(r.header("content-type") == "image/png");
    CHECK(r.header("content-length") == "3000");
    CHECK(r.header("transfer-encoding").empty());
    CHECK(r.body == png);
    CHECK(r.extra == 0);
    CHECK(rig.store.stats().inserts == 0);
    CHECK(rig.metrics.delta_stream.value() == 1);
  }
  CHECK(loop.close() == 0);
}

TEST_CASE("An edge answers 502 to a streamed response whose Content-Length is not a number",
          "[edge][client_exchange]") {
  // Before http::parse_content_length, strtoull read "3e3" as 3 and served a 3-byte body.
  uv::Loop loop;
  {
    EdgeRig rig(loop);
    Client client(loop, rig.port, get("/logo.png"));
    const uint32_t id = rig.nth_request(1);
    rig.agent.respond(id, 200, BodyMode::kStream,
                      {{"content-type", "image/png"}, {"content-length", "3e3"}}, false);
    const Response r = rig.answer(client);
    CHECK(r.status == 502);
    CHECK(r.body == "Bad Gateway (bad_response_fields)\n");
    CHECK(rig.errors("bad_response_fields") == 1);
    CHECK(rig.store.stats().inserts == 0);
  }
  CHECK(loop.close() == 0);
}

TEST_CASE("An edge closes the client connection when a stream is reset after its head went out",
          "[edge][client_exchange]") {
  uv::Loop loop;
  {
    EdgeRig rig(loop);
    Client client(loop, rig.port, get("/cut"));
    const uint32_t id = rig.nth_request(1);
    rig.agent.respond(id, 200, BodyMode::kStream,
                      {{"content-type", "application/octet-stream"}, {"content-length", "10"}},
                      false);
    rig.agent.send(id, bytes_of("abcd"), false);
    REQUIRE(run_until(loop, [&] { return client.received.ends_with("abcd"); }));
    rig.agent.reset(id, ResetReason::kUpstreamFailed);
    REQUIRE(run_until(loop, [&] { return client.eof; }));
    const Response r = client.response();
    CHECK(r.status == 200);
    CHECK(r.header("content-length") == "10");
    CHECK_FALSE(r.complete);  // Cut short: the client can tell.
    CHECK(r.body == "abcd");
    CHECK(client.received.find("502") == std::string::npos);  // No second status line.
  }
  CHECK(loop.close() == 0);
}

TEST_CASE("An edge answers 502 when the tunnel is lost before the answer",
          "[edge][client_exchange]") {
  uv::Loop loop;
  {
    EdgeRig rig(loop);
    Client client(loop, rig.port, get("/lost"));
    rig.nth_request(1);
    rig.agent.close();
    const Response r = rig.answer(client);
    CHECK(r.status == 502);
    CHECK(r.body == "Bad Gateway (tunnel_lost)\n");
    CHECK(rig.store.held(rig.key("/lost")).empty());
  }
  CHECK(loop.close() == 0);
}
