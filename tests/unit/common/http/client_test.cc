#include "common/http/client.h"

#include <catch2/catch.hpp>
#include <string>

#include "common/http/server.h"

using namespace coilgun;
using namespace std::chrono_literals;

namespace {

// Answers GET /big with 1 MiB and anything else with its target, on kept-alive connections.
class Backend : public http::Server {
 public:
  explicit Backend(uv::Loop& loop) : http::Server(loop, http::ServerOptions{}) {}
  void on_request(http::ServerConnection& c) override {
    const std::string text =
        c.request().target == "/big" ? std::string(1 << 20, 'x') : c.request().target;
    REQUIRE(c.respond_head(http::ResponseHead{}, http::ResponseFraming::kContentLength, text.size())
                .ok());
    c.respond_body(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
    c.respond_end();
  }
  void on_request_body(http::ServerConnection&, std::span<const uint8_t>) override {}
  void on_request_end(http::ServerConnection&) override {}
};

// Reads a response the way the agent does when the tunnel is full: it pauses the backend after
// every piece of body and resumes on the next loop turn, so the last piece is always read while
// paused.
struct SlowReader : http::ClientHandler {
  uv::Loop& loop;
  http::ClientConnection* conn = nullptr;
  uv::Timer resume;
  std::string body;
  bool ended = false;
  Status error;
  explicit SlowReader(uv::Loop& l) : loop(l), resume(l) {}
  void on_response_head(http::ResponseHead&&) override {}
  void on_response_body(std::span<const uint8_t> data) override {
    body.append(reinterpret_cast<const char*>(data.data()), data.size());
    conn->pause_reading();
    resume.start(0ms, [this] { conn->resume_reading(); });
  }
  void on_response_end() override {
    ended = true;
    resume.stop();
    loop.stop();
  }
  void on_error(Status s) override {
    error = s;
    loop.stop();
  }
};

http::RequestHead get(std::string target) {
  http::RequestHead head;
  head.method = "GET";
  head.target = std::move(target);
  head.headers.push_back({"Host", "backend"});
  return head;
}

}  // namespace

TEST_CASE("A connection whose body was paused at its end goes back to the pool able to read",
          "[http_client]") {
  uv::Loop loop;
  {
    Backend backend(loop);
    REQUIRE(backend.listen("127.0.0.1", 0).ok());
    http::ClientPool pool(loop, "127.0.0.1", backend.port(), 4, 2000ms, http::Parser::Limits{});
    uv::Timer guard(loop);
    guard.start(5s, [&] { loop.stop(); });

    SlowReader big(loop);
    std::unique_ptr<http::ClientConnection> conn;
    pool.acquire([&](auto r) {
      REQUIRE(r.ok());
      conn = std::move(r.value());
      big.conn = conn.get();
      REQUIRE(conn->send_request(get("/big"), http::BodyFraming::kNone, 0, &big).ok());
    });
    loop.run();
    REQUIRE(big.ended);
    CHECK(big.body.size() == size_t{1} << 20);
    CHECK(conn->reusable());
    pool.release(std::move(conn));
    REQUIRE(pool.idle() == 1);

    SlowReader small(loop);
    pool.acquire([&](auto r) {
      REQUIRE(r.ok());
      conn = std::move(r.value());
      CHECK(conn->reused());
      small.conn = conn.get();
      REQUIRE(conn->send_request(get("/small"), http::BodyFraming::kNone, 0, &small).ok());
    });
    loop.run();
    CHECK(small.ended);  // Not a stall until the guard.
    CHECK(small.body == "/small");
    CHECK(backend.connections() == 1);
    conn.reset();
    backend.close_all();
  }
  CHECK(loop.close() == 0);
}

TEST_CASE("A body on any method but POST, PUT and PATCH is one a backend may leave unread",
          "[http_client]") {
  using http::BodyFraming;
  CHECK(http::ClientConnection::carries_ignorable_body("GET", BodyFraming::kContentLength, 47));
  CHECK(http::ClientConnection::carries_ignorable_body("DELETE", BodyFraming::kChunked, 0));
  CHECK(http::ClientConnection::carries_ignorable_body("PROPFIND", BodyFraming::kChunked, 0));
  CHECK_FALSE(http::ClientConnection::carries_ignorable_body("GET", BodyFraming::kNone, 0));
  CHECK_FALSE(
      http::ClientConnection::carries_ignorable_body("GET", BodyFraming::kContentLength, 0));
  CHECK_FALSE(http::ClientConnection::carries_ignorable_body("POST", BodyFraming::kChunked, 0));
  CHECK_FALSE(
      http::ClientConnection::carries_ignorable_body("PUT", BodyFraming::kContentLength, 9));
}

namespace {

std::span<const uint8_t> bytes_of(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// Answers "GET /pipe" with Upgrade by a 101 and "hello" in the same write, then echoes what the
// client sends after it and closes once the client half-closed; answers "/hints" with a
// 103 Early Hints before its 200; answers "/101" with a 101 whatever was asked.
class UpgradeBackend : public http::Server {
 public:
  explicit UpgradeBackend(uv::Loop& loop) : http::Server(loop, http::ServerOptions{}) {}
  bool upgrade_seen = false;
  bool client_ended = false;
  void on_request(http::ServerConnection& c) override {
    const std::string& target = c.request().target;
    if (target == "/hints") {
      http::ResponseHead hints;
      hints.status = 103;
      hints.headers.push_back({"Link", "</style.css>; rel=preload"});
      c.send_interim(std::move(hints));
      REQUIRE(c.respond_head(http::ResponseHead{}, http::ResponseFraming::kContentLength, 2).ok());
      c.respond_body(bytes_of("ok"));
      c.respond_end();
      return;
    }
    upgrade_seen = c.upgrade_requested();
    http::ResponseHead head;
    head.status = 101;
    head.headers.push_back({"Upgrade", "test-pipe"});
    const Status s = c.respond_head(std::move(head), http::ResponseFraming::kNone);
    if (!s.ok()) {  // No upgrade asked: the server refuses to send a 101.
      c.respond_simple(500, "no 101 without Upgrade\n");
      return;
    }
    c.respond_body(bytes_of("hello"));
  }
  void on_upgraded_data(http::ServerConnection& c, std::span<const uint8_t> data) override {
    c.respond_body(data);
  }
  void on_upgraded_end(http::ServerConnection& c) override {
    client_ended = true;
    c.respond_end();
  }
};

struct PipeClient : http::ClientHandler {
  uv::Loop& loop;
  http::ClientConnection* conn = nullptr;
  int status = 0;
  std::vector<http::ResponseHead> interims;
  std::string upgrade_field, body;
  bool ended = false;
  Status error;
  explicit PipeClient(uv::Loop& l) : loop(l) {}
  void on_interim(http::ResponseHead&& head) override { interims.push_back(std::move(head)); }
  void on_response_head(http::ResponseHead&& head) override {
    status = head.status;
    upgrade_field = std::string(http::find(head.headers, "upgrade").value_or(""));
  }
  void on_response_body(std::span<const uint8_t> data) override {
    body.append(reinterpret_cast<const char*>(data.data()), data.size());
    if (body == "hello") {  // The backend's first bytes: now the client speaks, then ends.
      conn->send_body(bytes_of("ping"));
      conn->send_end();
    }
  }
  void on_response_end() override {
    ended = true;
    loop.stop();
  }
  void on_error(Status s) override {
    error = s;
    loop.stop();
  }
};

// Runs one exchange of |head| against |backend|; returns whether the connection could then be
// reused.
bool run_exchange(uv::Loop& loop, UpgradeBackend& backend, http::RequestHead head,
                  PipeClient& client) {
  http::ClientPool pool(loop, "127.0.0.1", backend.port(), 4, 2000ms, http::Parser::Limits{});
  uv::Timer guard(loop);
  guard.start(5s, [&] { loop.stop(); });
  std::unique_ptr<http::ClientConnection> conn;
  pool.acquire([&](auto r) {
    REQUIRE(r.ok());
    conn = std::move(r.value());
    client.conn = conn.get();
    REQUIRE(conn->send_request(std::move(head), http::BodyFraming::kNone, 0, &client).ok());
  });
  loop.run();
  const bool reusable = conn != nullptr && conn->reusable();
  conn.reset();
  return reusable;
}

}  // namespace

TEST_CASE("After a 101 both connections are byte pipes that end with a half-close",
          "[http_client][http_server]") {
  uv::Loop loop;
  {
    UpgradeBackend backend(loop);
    REQUIRE(backend.listen("127.0.0.1", 0).ok());
    PipeClient client(loop);
    http::RequestHead head = get("/pipe");
    head.headers.push_back({"Upgrade", "test-pipe"});
    head.headers.push_back({"Connection", "upgrade"});
    CHECK_FALSE(run_exchange(loop, backend, std::move(head), client));
    CHECK(backend.upgrade_seen);
    CHECK(client.error.ok());
    CHECK(client.status == 101);
    CHECK(client.upgrade_field == "test-pipe");
    // "hello" came in the same write as the head; "ping" went there and back; then the client's
    // FIN reached the server, whose close ended the client's exchange.
    CHECK(client.body == "helloping");
    CHECK(backend.client_ended);
    CHECK(client.ended);
    backend.close_all();
  }
  CHECK(loop.close() == 0);
}

TEST_CASE("A 101 is neither sent nor taken for a request that asked for no upgrade",
          "[http_client][http_server]") {
  uv::Loop loop;
  {
    UpgradeBackend backend(loop);
    REQUIRE(backend.listen("127.0.0.1", 0).ok());
    // The server side refuses to write the 101 (upgrade_requested() is false).
    PipeClient plain(loop);
    (void)run_exchange(loop, backend, get("/pipe"), plain);
    CHECK_FALSE(backend.upgrade_seen);
    CHECK(plain.status == 500);

    // A backend that sends one anyway: raw bytes on a socket, the client fails the exchange.
    uv::TcpListener raw(loop);
    std::unique_ptr<uv::TcpStream> accepted;
    REQUIRE(raw.listen("127.0.0.1", 0,
                       [&](std::unique_ptr<uv::TcpStream> s) {
                         accepted = std::move(s);
                         const std::string_view answer =
                             "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: "
                             "upgrade\r\n\r\n";
                         (void)accepted->write(std::vector<uint8_t>(answer.begin(), answer.end()));
                       })
                .ok());
    http::ClientPool pool(loop, "127.0.0.1", raw.port(), 4, 2000ms, http::Parser::Limits{});
    PipeClient client(loop);
    std::unique_ptr<http::ClientConnection> conn;
    uv::Timer guard(loop);
    guard.start(5s, [&] { loop.stop(); });
    pool.acquire([&](auto r) {
      REQUIRE(r.ok());
      conn = std::move(r.value());
      REQUIRE(conn->send_request(get("/"), http::BodyFraming::kNone, 0, &client).ok());
    });
    loop.run();
    CHECK(client.status == 0);  // The handler never saw the 101.
    CHECK(client.error.code() == Code::kProtocol);
    conn.reset();
    accepted.reset();
    raw.close();
    backend.close_all();
  }
  CHECK(loop.close() == 0);
}

TEST_CASE("Interim responses reach the client's handler before the final one",
          "[http_client][http_server]") {
  uv::Loop loop;
  {
    UpgradeBackend backend(loop);
    REQUIRE(backend.listen("127.0.0.1", 0).ok());
    PipeClient client(loop);
    CHECK(run_exchange(loop, backend, get("/hints"), client));
    REQUIRE(client.interims.size() == 1);
    CHECK(client.interims[0].status == 103);
    CHECK(http::find(client.interims[0].headers, "link") == "</style.css>; rel=preload");
    CHECK(client.status == 200);
    CHECK(client.body == "ok");
    backend.close_all();
  }
  CHECK(loop.close() == 0);
}

namespace {

// A filter whose every send of bytes fails: a socket write that fails inside write() itself.
struct FailingWrites : uv::StreamFilter {
  Status feed(std::span<const uint8_t> read, std::vector<uint8_t>& plain,
              std::vector<uint8_t>&) override {
    plain.insert(plain.end(), read.begin(), read.end());
    return Status::Ok();
  }
  Status send(std::span<const uint8_t> plain, std::vector<uint8_t>&) override {
    return plain.empty() ? Status::Ok() : Status(Code::kIo, "write refused", Side::kUpstream);
  }
  void close(std::vector<uint8_t>&) override {}
  size_t held() const override { return 0; }
  bool peer_closed() const override { return false; }
};

struct CountingHandler : http::ClientHandler {
  int errors = 0;
  void on_response_head(http::ResponseHead&&) override {}
  void on_response_body(std::span<const uint8_t>) override {}
  void on_response_end() override {}
  void on_error(Status) override { ++errors; }
};

}  // namespace

// The agent retries a reused connection's failed request from its handler's on_error; an error
// also returned by send_request() was reported a second time there, which failed the exchange
// while its retry was under way.
TEST_CASE("A request that cannot be written is an error returned, not one also reported",
          "[http_client]") {
  uv::Loop loop;
  {
    Backend backend(loop);
    REQUIRE(backend.listen("127.0.0.1", 0).ok());
    uv::TcpConnector connector(loop);
    std::unique_ptr<uv::TcpStream> stream;
    connector.connect("127.0.0.1", backend.port(), 2000ms, [&](auto r) {
      REQUIRE(r.ok());
      stream = std::move(r.value());
      loop.stop();
    });
    loop.run();
    REQUIRE(stream != nullptr);
    REQUIRE(stream->set_filter(std::make_unique<FailingWrites>()).ok());
    http::ClientConnection conn(std::move(stream), http::Parser::Limits{});
    CountingHandler handler;
    const Status s = conn.send_request(get("/"), http::BodyFraming::kNone, 0, &handler);
    CHECK_FALSE(s.ok());
    CHECK(handler.errors == 0);
    CHECK_FALSE(conn.reusable());
    backend.close_all();
  }
  CHECK(loop.close() == 0);
}

namespace {

// Keeps what a raw TCP peer received.
struct RawPeer : uv::TcpStream::Handler {
  uv::Loop& loop;
  std::unique_ptr<uv::TcpStream> stream;
  std::string got;
  explicit RawPeer(uv::Loop& l) : loop(l) {}
  void on_read(std::span<const uint8_t> data) override {
    got.append(reinterpret_cast<const char*>(data.data()), data.size());
    loop.stop();
  }
  void on_eof() override { loop.stop(); }
  void on_error(Status) override { loop.stop(); }
};

}  // namespace

// The edge's https fallback: a pool given a TLS context speaks TLS from the first byte, and a
// null context afterwards (a reload without https) never turns it back to cleartext.
TEST_CASE("A pool that spoke TLS never goes back to cleartext", "[http_client]") {
  uv::Loop loop;
  {
    RawPeer peer(loop);
    uv::TcpListener listener(loop);
    REQUIRE(listener
                .listen("127.0.0.1", 0,
                        [&](std::unique_ptr<uv::TcpStream> s) {
                          peer.stream = std::move(s);
                          peer.stream->set_handler(&peer);
                          REQUIRE(peer.stream->start_read().ok());
                        })
                .ok());
    auto web = tls::TlsContext::web_client("");  // The system's CAs: no handshake completes.
    REQUIRE(web.ok());
    http::ClientPool pool(loop, "localhost", listener.port(), 4, 2000ms, http::Parser::Limits{});
    pool.set_tls(*web);
    pool.set_tls(nullptr);
    CountingHandler handler;
    std::unique_ptr<http::ClientConnection> conn;
    pool.acquire([&](auto r) {
      REQUIRE(r.ok());
      conn = std::move(r.value());
      (void)conn->send_request(get("/"), http::BodyFraming::kNone, 0, &handler);
    });
    uv::Timer guard(loop);
    guard.start(5s, [&] { loop.stop(); });
    loop.run();
    REQUIRE_FALSE(peer.got.empty());
    CHECK(peer.got[0] == '\x16');  // A TLS handshake record, not "GET / HTTP/1.1".
    conn.reset();
    peer.stream.reset();
    listener.close();
  }
  CHECK(loop.close() == 0);
}
