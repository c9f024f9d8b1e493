#include "common/http/server.h"

#include <catch2/catch.hpp>
#include <functional>
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
    c.respond_body(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
    c.respond_end();
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

namespace {

// How many exchange objects lived, and what reached them.
struct ExchangeLog {
  int made = 0, deleted = 0, aborted = 0, handler_events = 0;
  std::string bodies;
  uv::Loop* stop_on_abort = nullptr;
};

// Per-exchange state handed to the connection: collects the body, answers at its end (from
// inside the parser's feed), with trailers that cannot be written first when asked.
class EchoExchange : public http::ServerExchange {
 public:
  EchoExchange(http::ServerConnection& c, ExchangeLog& log) : c_(c), log_(log) { ++log_.made; }
  ~EchoExchange() override { ++log_.deleted; }
  void on_request_body(std::span<const uint8_t> d) override {
    body_.append(reinterpret_cast<const char*>(d.data()), d.size());
  }
  void on_request_end() override {
    log_.bodies += body_ + ";";
    REQUIRE(c_.respond_head(http::ResponseHead{}, http::ResponseFraming::kChunked).ok());
    c_.respond_body(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(body_.data()), body_.size()));
    if (c_.request().target == "/bad-trailer") {
      const http::Header bad{"X-Bad", "a\x01z"};
      CHECK(c_.respond_end(std::span<const http::Header>(&bad, 1)).code() == Code::kMalformed);
    }
    c_.respond_end();
  }
  void on_abort() override {
    ++log_.aborted;
    if (log_.stop_on_abort != nullptr) log_.stop_on_abort->stop();
  }

 private:
  http::ServerConnection& c_;
  ExchangeLog& log_;
  std::string body_;
};

class ExchangeServer : public http::Server {
 public:
  ExchangeServer(uv::Loop& loop, ExchangeLog& log)
      : http::Server(loop, http::ServerOptions{}), log_(log) {}
  void on_request(http::ServerConnection& c) override {
    c.set_exchange(std::make_unique<EchoExchange>(c, log_));
  }
  void on_request_body(http::ServerConnection&, std::span<const uint8_t>) override {
    ++log_.handler_events;
  }
  void on_request_end(http::ServerConnection&) override { ++log_.handler_events; }
  void on_abort(http::ServerConnection&) override { ++log_.handler_events; }

 private:
  ExchangeLog& log_;
};

// Sends |bytes|, then reads until |done| holds for what came, the server closes, or 5 s pass.
// |close_after_send|: closes the client's socket once the bytes are written.
std::string exchange_bytes(uv::Loop& loop, uint16_t port, const std::string& bytes,
                           std::function<bool(const std::string&)> done,
                           bool close_after_send = false) {
  struct Reader : uv::TcpStream::Handler {
    uv::Loop& loop;
    std::function<bool(const std::string&)> done;
    std::string got;
    Reader(uv::Loop& l, std::function<bool(const std::string&)> d) : loop(l), done(std::move(d)) {}
    void on_read(std::span<const uint8_t> d) override {
      got.append(reinterpret_cast<const char*>(d.data()), d.size());
      if (done(got)) loop.stop();
    }
    void on_eof() override { loop.stop(); }
    void on_error(Status) override { loop.stop(); }
  } reader(loop, std::move(done));
  std::unique_ptr<uv::TcpStream> stream;
  uv::TcpConnector connector(loop);
  uv::Timer guard(loop), settle(loop);
  connector.connect("127.0.0.1", port, 2000ms, [&](auto r) {
    REQUIRE(r.ok());
    stream = std::move(r.value());
    stream->set_handler(&reader);
    REQUIRE(stream->start_read().ok());
    REQUIRE(stream->write(std::vector<uint8_t>(bytes.begin(), bytes.end())).ok());
    if (close_after_send) settle.start(50ms, [&] { stream.reset(); });
  });
  guard.start(5000ms, [&] { loop.stop(); });
  loop.run();
  return reader.got;
}

}  // namespace

TEST_CASE("A server reports an exchange's events to the object set for it, then frees it",
          "[http_server]") {
  uv::Loop loop;
  ExchangeLog log;
  {
    ExchangeServer server(loop, log);
    REQUIRE(server.listen("127.0.0.1", 0).ok());
    SECTION("pipelined exchanges answered from inside the parser's feed") {
      const std::string got = exchange_bytes(
          loop, server.port(),
          "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n12345"
          "POST /bad-trailer HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
          [](const std::string& s) { return s.find("abc\r\n0\r\n\r\n") != std::string::npos; });
      CHECK(got.find("5\r\n12345\r\n0\r\n\r\n") != std::string::npos);
      // Trailers that cannot be written were refused whole; the response then ended without
      // them.
      CHECK(got.find("3\r\nabc\r\n0\r\n\r\n") != std::string::npos);
      CHECK(got.find("X-Bad") == std::string::npos);
      CHECK(log.bodies == "12345;abc;");
      CHECK(log.made == 2);
      CHECK(log.aborted == 0);
    }
    SECTION("a client that went away mid-body") {
      log.stop_on_abort = &loop;
      exchange_bytes(
          loop, server.port(), "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n123",
          [](const std::string&) { return false; }, true);
      CHECK(log.made == 1);
      CHECK(log.aborted == 1);
      CHECK(log.bodies.empty());
    }
  }
  CHECK(loop.close() == 0);
  CHECK(log.deleted == log.made);  // By the loop, on a turn after each exchange ended.
  CHECK(log.handler_events == 0);
}
