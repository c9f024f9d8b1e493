#include "common/tunnel/session.h"

#include <catch2/catch.hpp>
#include <map>
#include <random>
#include <string>

using namespace coilgun;
using namespace coilgun::tunnel;
using Bytes = std::vector<uint8_t>;

namespace {

// One side of a connection, recording what it sees.
struct Peer : Session::Handler {
  std::unique_ptr<Session> session;
  bool auto_consume = true;
  std::vector<uint32_t> requests;
  std::map<uint32_t, std::vector<std::pair<std::string, std::string>>> fields;
  std::map<uint32_t, std::vector<VersionId>> held;
  std::map<uint32_t, uint16_t> status;
  std::map<uint32_t, BodyMode> mode;
  std::map<uint32_t, Bytes> body;
  std::map<uint32_t, bool> ended;
  std::map<uint32_t, ResetReason> resets;
  std::map<uint32_t, std::vector<std::pair<std::string, std::string>>> trailers;
  int window_events = 0;
  bool goaway = false;

  Peer(bool client, SessionOptions o = {}) {
    o.client = client;
    session = std::make_unique<Session>(o, *this, 0);
  }
  static std::vector<std::pair<std::string, std::string>> copy(std::span<const HeaderField> f) {
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& x : f) out.emplace_back(x.name, x.value);
    return out;
  }
  void on_request(uint32_t s, std::span<const VersionId> h, std::span<const HeaderField> f,
                  bool end) override {
    requests.push_back(s);
    held[s].assign(h.begin(), h.end());
    fields[s] = copy(f);
    if (end) ended[s] = true;
  }
  void on_response(uint32_t s, uint16_t st, BodyMode m, std::span<const HeaderField> f,
                   bool end) override {
    status[s] = st;
    mode[s] = m;
    fields[s] = copy(f);
    if (end) ended[s] = true;
  }
  void on_data(uint32_t s, std::span<const uint8_t> d, bool end) override {
    body[s].insert(body[s].end(), d.begin(), d.end());
    if (end) ended[s] = true;
    if (auto_consume) session->consume(s, d.size());
  }
  void on_trailers(uint32_t s, std::span<const HeaderField> f) override {
    trailers[s] = copy(f);
    ended[s] = true;
  }
  void on_stream_reset(uint32_t s, ResetReason r) override { resets[s] = r; }
  void on_send_window(uint32_t) override { ++window_events; }
  void on_goaway(uint32_t, GoawayCode) override { goaway = true; }
};

// Moves bytes both ways until nothing is left, optionally cutting them at random points.
void pump(Peer& a, Peer& b, uint64_t now = 0, std::mt19937* cut = nullptr) {
  for (int round = 0; round < 10000; ++round) {
    Bytes ab, ba;
    a.session->take_output(ab);
    b.session->take_output(ba);
    if (ab.empty() && ba.empty()) return;
    auto deliver = [&](Peer& to, const Bytes& bytes) {
      size_t at = 0;
      while (at < bytes.size()) {
        size_t n = bytes.size() - at;
        if (cut != nullptr) n = std::min<size_t>(n, 1 + (*cut)() % 97);
        REQUIRE(to.session->receive(std::span<const uint8_t>(bytes).subspan(at, n), now).ok());
        at += n;
      }
    };
    deliver(b, ab);
    deliver(a, ba);
  }
  FAIL("pump did not settle");
}

std::vector<HeaderField> request(const std::string& path) {
  static std::string p;
  p = path;
  return {{":method", "GET"},
          {":scheme", "https"},
          {":authority", "example.com"},
          {":path", p},
          {"cookie", "id=1"}};
}

Bytes pattern(size_t n, int seed) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(i * 31 + seed);
  return b;
}

}  // namespace

TEST_CASE("A request and a response with bodies and trailers cross a session pair", "[tunnel]") {
  std::mt19937 cut(1);
  for (std::mt19937* c : {static_cast<std::mt19937*>(nullptr), &cut}) {
    Peer edge(true), agent(false);
    const VersionId ids[] = {VersionId{1, 2}, VersionId{3, 4}};
    auto id = edge.session->submit_request(ids, request("/a"), false);
    REQUIRE(id.ok());
    const Bytes upload = pattern(100000, 1);
    REQUIRE(*edge.session->send_data(*id, upload, true) == upload.size());
    pump(edge, agent, 0, c);
    REQUIRE(agent.requests == std::vector<uint32_t>{*id});
    CHECK(agent.held[*id].size() == 2);
    CHECK(agent.held[*id][1] == VersionId{3, 4});
    CHECK(agent.fields[*id][3].second == "/a");
    CHECK(agent.fields[*id][4].first == "cookie");
    CHECK(agent.body[*id] == upload);
    CHECK(agent.ended[*id]);

    const Bytes page = pattern(300000, 2);
    REQUIRE(
        agent.session
            ->submit_response(*id, 200, BodyMode::kStream, {{{"content-type", "text/html"}}}, false)
            .ok());
    size_t sent = 0;
    for (int i = 0; i < 100 && sent < page.size(); ++i) {
      auto n = agent.session->send_data(*id, std::span<const uint8_t>(page).subspan(sent), false);
      REQUIRE(n.ok());
      sent += *n;
      pump(edge, agent, 0, c);
    }
    REQUIRE(sent == page.size());
    REQUIRE(agent.session->submit_trailers(*id, {{{"x-checksum", "abc"}}}).ok());
    pump(edge, agent, 0, c);
    CHECK(edge.status[*id] == 200);
    CHECK(edge.mode[*id] == BodyMode::kStream);
    CHECK(edge.body[*id] == page);
    CHECK(edge.trailers[*id][0].second == "abc");
    CHECK(edge.session->open_streams() == 0);
    CHECK(agent.session->open_streams() == 0);
  }
}

TEST_CASE("A receiver that stops consuming stops the sender at its stream window", "[tunnel]") {
  Peer edge(true), agent(false);
  edge.auto_consume = false;
  auto id = edge.session->submit_request({}, request("/big"), true);
  REQUIRE(id.ok());
  pump(edge, agent);
  REQUIRE(agent.session->submit_response(*id, 200, BodyMode::kStream, {}, false).ok());
  const Bytes page = pattern(5 << 20, 3);
  size_t sent = *agent.session->send_data(*id, page, false);
  pump(edge, agent);
  // Nothing consumed: exactly one stream window got through, and no more may be sent.
  CHECK(sent == kDefaultStreamWindow);
  CHECK(edge.body[*id].size() == kDefaultStreamWindow);
  CHECK(agent.session->send_window(*id) == 0);
  CHECK(*agent.session->send_data(*id, std::span<const uint8_t>(page).subspan(sent), false) == 0);

  // Consuming grants the window back; the sender hears about it and continues.
  const int events = agent.window_events;
  edge.session->consume(*id, edge.body[*id].size());
  pump(edge, agent);
  CHECK(agent.window_events > events);
  CHECK(agent.session->send_window(*id) == kDefaultStreamWindow);
  for (int i = 0; i < 1000 && sent < page.size(); ++i) {
    const size_t before = edge.body[*id].size();
    sent += *agent.session->send_data(*id, std::span<const uint8_t>(page).subspan(sent),
                                      sent + kDefaultStreamWindow >= page.size());
    pump(edge, agent);
    edge.session->consume(*id, edge.body[*id].size() - before);
    pump(edge, agent);
  }
  CHECK(sent == page.size());
  CHECK(edge.body[*id] == page);
}

TEST_CASE("The connection window bounds what all streams together may send", "[tunnel]") {
  SessionOptions small;
  small.connection_window = kInitialConnectionWindow;  // 1 MiB for everyone.
  Peer edge(true, small), agent(false);
  edge.auto_consume = false;
  std::vector<uint32_t> ids;
  for (int i = 0; i < 8; ++i) ids.push_back(*edge.session->submit_request({}, request("/s"), true));
  pump(edge, agent);
  size_t total = 0;
  const Bytes chunk = pattern(kDefaultStreamWindow, 4);
  for (uint32_t id : ids) {
    REQUIRE(agent.session->submit_response(id, 200, BodyMode::kStream, {}, false).ok());
    total += *agent.session->send_data(id, chunk, false);
  }
  CHECK(total == kInitialConnectionWindow);  // Four streams' worth, not eight.
  pump(edge, agent);
  size_t received = 0;
  for (uint32_t id : ids) received += edge.body[id].size();
  CHECK(received == kInitialConnectionWindow);
}

TEST_CASE("A peer that overruns a stream window has the stream reset", "[tunnel]") {
  Peer edge(true), agent(false);
  agent.auto_consume = false;  // No WINDOW_UPDATE may entitle the edge to more.
  auto id = edge.session->submit_request({}, request("/x"), false);
  pump(edge, agent);
  // A misbehaving edge: raw DATA frames past the agent's stream window.
  Bytes raw;
  const Bytes chunk(60000, 'a');
  for (int i = 0; i < 5; ++i) REQUIRE(proto::write_data(raw, *id, chunk, false).ok());
  REQUIRE(agent.session->receive(raw, 0).ok());
  CHECK(agent.resets[*id] == ResetReason::kFlowControl);
  CHECK_FALSE(agent.session->stream_open(*id));
  CHECK(agent.body[*id].size() < kDefaultStreamWindow + 1);
}

TEST_CASE("Pings measure the round trip and a silent peer is declared dead", "[tunnel]") {
  SessionOptions o;
  o.ping_interval_ms = 1000;
  o.ping_timeout_ms = 3000;
  Peer edge(true, o), agent(false);
  CHECK(edge.session->next_timeout_ms() == 1000);
  REQUIRE(edge.session->on_timeout(1000).ok());
  Bytes ping;
  edge.session->take_output(ping);
  REQUIRE(agent.session->receive(ping, 1000).ok());
  Bytes pong;
  agent.session->take_output(pong);
  REQUIRE(edge.session->receive(pong, 1007).ok());
  REQUIRE(edge.session->rtt_ms().has_value());
  CHECK(*edge.session->rtt_ms() == 7);
  // The next ping is an interval after the answer, rounded up to a step of interval / 8.
  CHECK(edge.session->next_timeout_ms() == 2125);

  REQUIRE(edge.session->on_timeout(2125).ok());  // A ping nobody answers.
  CHECK(edge.session->on_timeout(5124).ok());
  const Status dead = edge.session->on_timeout(5125);
  CHECK(dead.code() == Code::kTimeout);
  CHECK(edge.session->failed());
}

TEST_CASE("An idle tunnel carries the edge's pings and their answers only", "[tunnel]") {
  SessionOptions o;
  o.ping_interval_ms = 1000;
  o.ping_timeout_ms = 3000;
  Peer edge(true, o), agent(false, o);
  pump(edge, agent);  // SETTINGS both ways.
  int edge_pings = 0, agent_pings = 0;
  // Ten idle seconds, each side's timer run whenever it is due, bytes delivered at once.
  for (uint64_t now = 0; now <= 10000; ++now) {
    if (edge.session->next_timeout_ms() <= now) {
      REQUIRE(edge.session->on_timeout(now).ok());
      Bytes out;
      edge.session->take_output(out);
      if (!out.empty()) ++edge_pings;
      REQUIRE(agent.session->receive(out, now).ok());
    }
    if (agent.session->next_timeout_ms() <= now) {
      REQUIRE(agent.session->on_timeout(now).ok());
      Bytes out;
      agent.session->take_output(out);
      if (!out.empty()) ++agent_pings;
      REQUIRE(edge.session->receive(out, now).ok());
    }
    Bytes answer;
    agent.session->take_output(answer);
    if (!answer.empty()) REQUIRE(edge.session->receive(answer, now).ok());
  }
  CHECK(edge_pings >= 9);
  CHECK(edge_pings <= 10);
  CHECK(agent_pings == 0);
  CHECK_FALSE(agent.session->failed());
  CHECK_FALSE(edge.session->failed());
}

TEST_CASE("A tunnel that hears from its peer does not ping, and a silent one does", "[tunnel]") {
  SessionOptions o;
  o.ping_interval_ms = 1000;
  Peer edge(true, o), agent(false, o);
  pump(edge, agent);
  // The agent hears from the edge every 900 ms: no ping from it, however long.
  for (uint64_t now = 900; now <= 9000; now += 900) {
    CHECK(agent.session->next_timeout_ms() > now);
    auto id = edge.session->submit_request({}, request("/"), true);
    REQUIRE(id.ok());
    Bytes to_agent;
    edge.session->take_output(to_agent);
    REQUIRE(agent.session->receive(to_agent, now).ok());
  }
  // Then silence: the agent pings two intervals after the last bytes (9000 + 2000).
  CHECK(agent.session->next_timeout_ms() == 11000);
}

TEST_CASE("GOAWAY lets open streams finish and refuses new ones", "[tunnel]") {
  Peer edge(true), agent(false);
  auto first = edge.session->submit_request({}, request("/1"), true);
  pump(edge, agent);
  auto second = edge.session->submit_request({}, request("/2"), true);  // In flight...
  agent.session->goaway(GoawayCode::kShutdown, "draining");             // ...when the agent drains.
  Bytes to_agent, to_edge;
  edge.session->take_output(to_agent);
  agent.session->take_output(to_edge);
  REQUIRE(edge.session->receive(to_edge, 0).ok());    // GOAWAY(last = first) reaches the edge.
  REQUIRE(agent.session->receive(to_agent, 0).ok());  // The second request arrives late.
  CHECK(edge.goaway);
  CHECK(edge.resets[*second] == ResetReason::kRefused);  // Never processed: retry elsewhere.
  CHECK(edge.session->submit_request({}, request("/3"), true).status().code() == Code::kClosed);
  // The first stream still completes.
  REQUIRE(agent.session->submit_response(*first, 200, BodyMode::kNone, {}, true).ok());
  pump(edge, agent);
  CHECK(edge.status[*first] == 200);
  CHECK(agent.requests.size() == 1);
}

TEST_CASE("The agent's stream limit is enforced and announced", "[tunnel]") {
  SessionOptions limited;
  limited.max_streams = 2;
  Peer edge(true), agent(false, limited);
  // Before the agent's SETTINGS arrive the edge does not know the limit: the agent refuses.
  std::vector<uint32_t> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(*edge.session->submit_request({}, request("/"), true));
  pump(edge, agent);
  CHECK(agent.requests.size() == 2);
  CHECK(edge.resets[ids[2]] == ResetReason::kRefused);
  // Now it knows.
  CHECK(edge.session->submit_request({}, request("/"), true).status().code() == Code::kRefused);
}

TEST_CASE("A stream reset mid-response is gone on both sides", "[tunnel]") {
  Peer edge(true), agent(false);
  auto id = edge.session->submit_request({}, request("/r"), true);
  pump(edge, agent);
  REQUIRE(agent.session->submit_response(*id, 200, BodyMode::kStream, {}, false).ok());
  REQUIRE(agent.session->send_data(*id, pattern(1000, 5), false).ok());
  pump(edge, agent);
  edge.session->reset(*id, ResetReason::kCancel);  // The client went away.
  pump(edge, agent);
  CHECK(agent.resets[*id] == ResetReason::kCancel);
  CHECK_FALSE(agent.session->stream_open(*id));
  CHECK(agent.session->send_data(*id, pattern(10, 6), false).status().code() == Code::kClosed);
  CHECK(edge.session->open_streams() == 0);
}

TEST_CASE("Two hundred concurrent streams share one session pair", "[tunnel]") {
  Peer edge(true), agent(false);
  std::vector<uint32_t> ids;
  for (int i = 0; i < 200; ++i) {
    ids.push_back(*edge.session->submit_request({}, request("/p" + std::to_string(i)), true));
  }
  pump(edge, agent);
  REQUIRE(agent.requests.size() == 200);
  for (size_t i = 0; i < ids.size(); ++i) {
    REQUIRE(agent.session->submit_response(ids[i], 200, BodyMode::kCoded, {}, false).ok());
    REQUIRE(*agent.session->send_data(ids[i], pattern(2000 + i, static_cast<int>(i)), true) ==
            2000 + i);
  }
  pump(edge, agent);
  for (size_t i = 0; i < ids.size(); ++i) {
    CHECK(edge.body[ids[i]] == pattern(2000 + i, static_cast<int>(i)));
    CHECK(edge.ended[ids[i]]);
  }
  CHECK(edge.session->open_streams() == 0);
  CHECK(agent.session->open_streams() == 0);
}

TEST_CASE("Header fields over the peer's limit are refused without breaking the session",
          "[tunnel]") {
  SessionOptions tight;
  tight.max_header_block = 4096;
  Peer edge(true), agent(false, tight);
  pump(edge, agent);  // The edge learns the agent's limit.
  const std::string big(10000, 'x');
  std::vector<HeaderField> fields = request("/big");
  fields.push_back({"x-big", big});
  CHECK(edge.session->submit_request({}, fields, true).status().code() == Code::kTooLarge);
  // The shared header context is still in step: the next request decodes.
  auto id = edge.session->submit_request({}, request("/ok"), true);
  REQUIRE(id.ok());
  pump(edge, agent);
  CHECK(agent.fields[*id][3].second == "/ok");
}

TEST_CASE("Garbage from a peer fails the session cleanly with a GOAWAY", "[tunnel]") {
  std::mt19937 rng(9);
  for (int round = 0; round < 200; ++round) {
    Peer agent(false);
    Bytes junk(1 + rng() % 300);
    for (auto& b : junk) b = static_cast<uint8_t>(rng());
    const Status s = agent.session->receive(junk, 0);
    if (!s.ok()) {
      CHECK(agent.session->failed());
      Bytes out;
      agent.session->take_output(out);
      CHECK_FALSE(out.empty());  // SETTINGS, then the GOAWAY.
      CHECK_FALSE(agent.session->receive(Bytes{0}, 0).ok());
    }
  }
}

TEST_CASE("Interim heads precede the final one, and a 101 makes the stream a pipe both ways",
          "[tunnel]") {
  Peer edge(true), agent(false);
  // A request that stays open: an upgrade, whose stream carries the new protocol's bytes.
  auto id = edge.session->submit_request({}, request("/ws"), false);
  REQUIRE(id.ok());
  pump(edge, agent);
  const std::vector<HeaderField> hints = {{"link", "</a.css>; rel=preload"}};
  REQUIRE(agent.session->submit_response(*id, 103, BodyMode::kNone, hints, false).ok());
  // An interim head cannot carry a body nor end the stream: refused before it is encoded.
  CHECK(agent.session->submit_response(*id, 103, BodyMode::kStream, {}, false).code() ==
        Code::kInternal);
  CHECK(agent.session->submit_response(*id, 103, BodyMode::kNone, {}, true).code() ==
        Code::kInternal);
  pump(edge, agent);
  CHECK(edge.status[*id] == 103);
  CHECK(edge.fields[*id] == Peer::copy(hints));
  CHECK(edge.resets.empty());

  const std::vector<HeaderField> switched = {{"upgrade", "x"}};
  REQUIRE(agent.session->submit_response(*id, 101, BodyMode::kStream, switched, false).ok());
  const Bytes up = pattern(300000, 1), down = pattern(300000, 2);  // Over a stream window.
  size_t up_sent = 0, down_sent = 0;
  for (int round = 0; round < 100 && (up_sent < up.size() || down_sent < down.size()); ++round) {
    auto u = edge.session->send_data(*id, std::span<const uint8_t>(up).subspan(up_sent), false);
    auto d =
        agent.session->send_data(*id, std::span<const uint8_t>(down).subspan(down_sent), false);
    REQUIRE(u.ok());
    REQUIRE(d.ok());
    up_sent += *u;
    down_sent += *d;
    pump(edge, agent);
  }
  CHECK(edge.status[*id] == 101);
  CHECK(agent.body[*id] == up);
  CHECK(edge.body[*id] == down);
  // Each side ends its own half; the stream is gone once both did.
  REQUIRE(edge.session->send_data(*id, {}, true).ok());
  pump(edge, agent);
  CHECK(agent.session->stream_open(*id));
  REQUIRE(agent.session->send_data(*id, {}, true).ok());
  pump(edge, agent);
  CHECK_FALSE(agent.session->stream_open(*id));
  CHECK_FALSE(edge.session->stream_open(*id));
  CHECK(edge.resets.empty());
  CHECK(agent.resets.empty());
}

namespace {

// The frames in |bytes|, as (type, stream) in order.
std::vector<std::pair<proto::FrameType, uint32_t>> frames_of(const Bytes& bytes) {
  std::vector<std::pair<proto::FrameType, uint32_t>> out;
  proto::FrameDecoder decoder(proto::kMaxFramePayloadLimit);
  size_t used = 0;
  while (used < bytes.size()) {
    proto::Frame f;
    auto r = decoder.decode(std::span<const uint8_t>(bytes).subspan(used), f);
    REQUIRE(r.ok());
    REQUIRE(*r > 0);
    out.emplace_back(f.type, f.stream);
    used += *r;
  }
  return out;
}

}  // namespace

TEST_CASE("Control frames go out ahead of queued DATA, and streams take turns", "[tunnel]") {
  Peer edge(true), agent(false);
  auto big = edge.session->submit_request({}, request("/big"), true);
  auto small = edge.session->submit_request({}, request("/small"), true);
  REQUIRE((big.ok() && small.ok()));
  pump(edge, agent);
  const std::vector<HeaderField> ok = {{":status", "200"}};
  REQUIRE(agent.session->submit_response(*big, 200, BodyMode::kStream, ok, false).ok());
  const Bytes bulk = pattern(200000, 3);
  REQUIRE(*agent.session->send_data(*big, bulk, true) == bulk.size());
  // The small response comes after the bulk was queued; a ping comes after both.
  REQUIRE(agent.session->submit_response(*small, 200, BodyMode::kStream, ok, false).ok());
  REQUIRE(*agent.session->send_data(*small, pattern(100, 4), true) == 100);
  Bytes first;
  agent.session->take_output(first, 16000);  // Room for less than one slice of DATA.
  Bytes ping;
  REQUIRE(edge.session->on_timeout(10000).ok());
  edge.session->take_output(ping);
  REQUIRE(agent.session->receive(ping, 10000).ok());
  Bytes second;
  agent.session->take_output(second, 20000);
  const auto f1 = frames_of(first), f2 = frames_of(second);
  // Both heads first; then one slice of the big body.
  REQUIRE(f1.size() == 3);
  CHECK(f1[0] == std::make_pair(proto::FrameType::kResponse, *big));
  CHECK(f1[1] == std::make_pair(proto::FrameType::kResponse, *small));
  CHECK(f1[2] == std::make_pair(proto::FrameType::kData, *big));
  // The PING's answer (with the WINDOW_UPDATEs) jumps the 180 KB still queued; the small body
  // has its turn before the big one's next slice.
  REQUIRE(f2.size() >= 2);
  CHECK(f2[0] == std::make_pair(proto::FrameType::kPing, 0u));
  CHECK(std::find(f2.begin(), f2.end(), std::make_pair(proto::FrameType::kData, *small)) <
        std::find(f2.begin() + 1, f2.end(), std::make_pair(proto::FrameType::kData, *big)));
  CHECK(agent.session->stream_open(*big));  // Its end is still queued.
  REQUIRE(edge.session->receive(first, 10001).ok());
  REQUIRE(edge.session->receive(second, 10001).ok());
  pump(edge, agent);
  CHECK(edge.body[*big] == bulk);
  CHECK(edge.body[*small] == pattern(100, 4));
  CHECK(edge.ended[*big]);
  CHECK_FALSE(agent.session->stream_open(*big));  // Out, and closed.
}

TEST_CASE("Trailers submitted behind queued DATA follow it", "[tunnel]") {
  Peer edge(true), agent(false);
  auto id = edge.session->submit_request({}, request("/t"), true);
  auto other = edge.session->submit_request({}, request("/o"), true);
  REQUIRE((id.ok() && other.ok()));
  pump(edge, agent);
  REQUIRE(agent.session->submit_response(*id, 200, BodyMode::kStream, {}, false).ok());
  const Bytes body = pattern(100000, 5);
  REQUIRE(*agent.session->send_data(*id, body, false) == body.size());
  const std::vector<HeaderField> trailers = {{"x-sum", "42"}};
  REQUIRE(agent.session->submit_trailers(*id, trailers).ok());
  // Another stream's head, submitted after the trailers but sent before them (they wait for
  // the DATA): the shared header context must still decode both.
  const std::vector<HeaderField> fields = {{"x-a", "b"}};
  REQUIRE(agent.session->submit_response(*other, 204, BodyMode::kNone, fields, true).ok());
  pump(edge, agent);
  CHECK(edge.body[*id] == body);
  CHECK(edge.trailers[*id] == Peer::copy(trailers));
  CHECK(edge.status[*other] == 204);
  CHECK(edge.fields[*other] == Peer::copy(fields));
  CHECK(edge.resets.empty());
}

TEST_CASE("A link still carrying bytes is not dead for an answer that is late", "[tunnel]") {
  SessionOptions o;
  o.ping_interval_ms = 1000;
  o.ping_timeout_ms = 3000;
  Peer edge(true, o), agent(false);
  REQUIRE(edge.session->on_timeout(1000).ok());  // The ping goes; its answer will be late.
  Bytes settings;
  agent.session->take_output(settings);
  // Bytes keep coming (the peer's SETTINGS here; bulk DATA on a slow link) while the answer
  // waits behind them.
  REQUIRE(edge.session->receive(settings, 3500).ok());
  CHECK(edge.session->on_timeout(4000).ok());
  CHECK(edge.session->next_timeout_ms() == 6500);
  CHECK(edge.session->on_timeout(6499).ok());
  // Our own bytes acknowledged by the peer's TCP (the sender of bulk) count as carried too.
  edge.session->written(6000);
  CHECK(edge.session->on_timeout(8999).ok());
  CHECK(edge.session->on_timeout(9000).code() == Code::kTimeout);  // Then nothing for 3 s.
}

TEST_CASE("A stream answered before the peer ended is reset only behind its last DATA",
          "[tunnel]") {
  Peer edge(true), agent(false);
  auto id = edge.session->submit_request({}, request("/upload"), false);  // A body to come.
  REQUIRE(id.ok());
  pump(edge, agent);
  REQUIRE(agent.session->submit_response(*id, 413, BodyMode::kStream, {}, false).ok());
  const Bytes body = pattern(50000, 6);
  REQUIRE(*agent.session->send_data(*id, body, true) == body.size());
  agent.session->reset_after_data(*id);
  pump(edge, agent);
  CHECK(edge.status[*id] == 413);
  CHECK(edge.body[*id] == body);  // All of it, then the reset.
  CHECK(edge.ended[*id]);
  CHECK(edge.resets[*id] == ResetReason::kCancel);  // After the body: stop sending yours.
  CHECK_FALSE(edge.session->stream_open(*id));
  CHECK_FALSE(agent.session->stream_open(*id));
}

TEST_CASE("A request on a link that died silently fails within the answer timeout", "[tunnel]") {
  SessionOptions o;
  o.ping_interval_ms = 10000;
  o.ping_timeout_ms = 30000;
  o.answer_timeout_ms = 1000;
  Peer edge(true, o), agent(false);
  pump(edge, agent);
  // A live peer: the PING sent with the request is answered, whatever the backend does.
  auto live = edge.session->submit_request({}, request("/slow"), true);
  REQUIRE(live.ok());
  edge.session->expect_answer(100);
  CHECK(edge.session->next_timeout_ms() == 1100);
  Bytes out;
  edge.session->take_output(out);
  REQUIRE(agent.session->receive(out, 150).ok());
  Bytes back;
  agent.session->take_output(back);
  REQUIRE(edge.session->receive(back, 160).ok());
  CHECK(edge.session->on_timeout(5000).ok());
  // A dead one: the next request's bytes go nowhere, and nothing comes back.
  auto lost = edge.session->submit_request({}, request("/lost"), true);
  REQUIRE(lost.ok());
  edge.session->expect_answer(6000);
  CHECK(edge.session->on_timeout(6999).ok());
  CHECK(edge.session->on_timeout(7000).code() == Code::kTimeout);  // Not the 30 s ping timeout.
}
