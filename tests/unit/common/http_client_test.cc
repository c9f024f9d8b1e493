#include "common/http_client.h"

#include <catch2/catch.hpp>
#include <string>

#include "common/http_server.h"

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
    REQUIRE(c.respond_head(http::ResponseHead{}, http::ResponseFraming::kContentLength,
                           text.size())
                .ok());
    REQUIRE(c.respond_body(std::span<const uint8_t>(
                               reinterpret_cast<const uint8_t*>(text.data()), text.size()))
                .ok());
    REQUIRE(c.respond_end().ok());
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
