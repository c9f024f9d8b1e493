#include "common/http/server.h"

#include <catch2/catch.hpp>
#include <string>

using namespace coilgun;
using namespace std::chrono_literals;

namespace {

// Answers GET at once, from inside on_request (the parser is mid-feed then), and POST once its
// body is in; counts connections.
class TestServer : public http::Server {
 public:
  explicit TestServer(uv::Loop& loop) : http::Server(loop, http::ServerOptions{}) {}
  int accepted = 0;
  void on_request(http::ServerConnection& c) override {
    if (c.request().method == "POST") {
      body.clear();
      return;
    }
    reply(c, "get " + c.request().target);
  }
  void on_request_body(http::ServerConnection&, std::span<const uint8_t> d) override {
    body.append(reinterpret_cast<const char*>(d.data()), d.size());
  }
  void on_request_end(http::ServerConnection& c) override {
    if (c.request().method == "POST") reply(c, "post " + body);
  }
  static void reply(http::ServerConnection& c, const std::string& text) {
    http::ResponseHead head;
    REQUIRE(c.respond_head(head, http::ResponseFraming::kContentLength, text.size()).ok());
    REQUIRE(c.respond_body(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()),
                                                    text.size()))
                .ok());
    REQUIRE(c.respond_end().ok());
  }
  std::string body;
};

struct Client : uv::TcpStream::Handler {
  uv::Loop& loop;
  std::unique_ptr<uv::TcpStream> stream;
  std::string received;
  size_t want_responses;
  bool eof = false;
  Client(uv::Loop& l, size_t want) : loop(l), want_responses(want) {}
  size_t responses() const {
    size_t n = 0;
    for (size_t at = 0; (at = received.find("HTTP/1.1 200", at)) != std::string::npos; ++at) ++n;
    return n;
  }
  void on_read(std::span<const uint8_t> d) override {
    received.append(reinterpret_cast<const char*>(d.data()), d.size());
    if (responses() == want_responses && received.ends_with("post 12345")) loop.stop();
  }
  void on_eof() override {
    eof = true;
    loop.stop();
  }
  void on_error(Status) override { loop.stop(); }
};

}  // namespace

TEST_CASE("A server answers pipelined requests in order on one kept-alive connection",
          "[http_server]") {
  uv::Loop loop;
  {
    TestServer server(loop);
    REQUIRE(server.listen("127.0.0.1", 0).ok());
    Client client(loop, 4);
    uv::TcpConnector connector(loop);
    connector.connect("127.0.0.1", server.port(), 2000ms, [&](auto r) {
      REQUIRE(r.ok());
      client.stream = std::move(r.value());
      client.stream->set_handler(&client);
      REQUIRE(client.stream->start_read().ok());
      const std::string reqs =
          "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"
          "GET /c HTTP/1.1\r\nHost: x\r\n\r\n"
          "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n12345";
      REQUIRE(client.stream->write(std::vector<uint8_t>(reqs.begin(), reqs.end())).ok());
    });
    uv::Timer guard(loop);
    guard.start(5s, [&] { loop.stop(); });
    loop.run();
    CHECK(client.responses() == 4);
    const size_t a = client.received.find("get /a"), b = client.received.find("get /b"),
                 c = client.received.find("get /c"), p = client.received.find("post 12345");
    CHECK(a < b);
    CHECK(b < c);
    CHECK(c < p);
    CHECK(p != std::string::npos);
    CHECK_FALSE(client.eof);  // Kept alive after all four.
    CHECK(server.connections() == 1);
    CHECK(client.received.find("Connection: close") == std::string::npos);
  }
  CHECK(loop.close() == 0);
}
