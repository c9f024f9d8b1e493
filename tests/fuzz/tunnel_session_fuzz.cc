// Fuzz target: the tunnel session (common/tunnel/session.h) as a whole, the way nghttp2's
// fuzz/fuzz_target.cc drives its session. Input: a script of one-byte operations (with their
// argument bytes) run on an edge and an agent session wired together in memory, so that most
// frames the agent reads are valid ones its peer made (REQUEST and RESPONSE with compressed
// header blocks, DATA under flow control, trailers, resets, pings, GOAWAY); one operation
// corrupts a byte on its way, and another hands the agent raw script bytes.
//
// Checked: nothing crashes, leaks or reads out of bounds (the sanitizers); a session that
// failed stays failed; output_bytes() is what take_output() hands out with no budget; a
// stream never delivers events after it was reset by its handler; the script always ends.

#include <cstdlib>
#include <map>
#include <memory>
#include <set>
#include <vector>

#include "common/tunnel/session.h"

namespace {

using namespace coilgun;
using namespace coilgun::tunnel;
using Bytes = std::vector<uint8_t>;

[[noreturn]] void die() { std::abort(); }

// One peer: consumes what it is given (or not, to exercise the windows), remembers its streams.
struct Peer : Session::Handler {
  std::unique_ptr<Session> session;
  std::set<uint32_t> open;     // Streams with events to come.
  std::set<uint32_t> dropped;  // Streams this side reset: no event may follow.
  bool consume = true;

  explicit Peer(bool client) {
    SessionOptions o;
    o.client = client;
    o.ping_interval_ms = 1000;
    o.ping_timeout_ms = 3000;
    o.max_streams = 16;
    session = std::make_unique<Session>(o, *this, 0);
  }
  void seen(uint32_t stream) {
    if (dropped.count(stream) != 0) die();
    open.insert(stream);
  }
  void on_request(uint32_t stream, std::span<const VersionId>, std::span<const HeaderField>,
                  bool) override {
    seen(stream);
  }
  void on_response(uint32_t stream, uint16_t, BodyMode, std::span<const HeaderField>,
                   bool) override {
    seen(stream);
  }
  void on_data(uint32_t stream, std::span<const uint8_t> data, bool) override {
    seen(stream);
    if (consume) session->consume(stream, data.size());
  }
  void on_trailers(uint32_t stream, std::span<const HeaderField>) override { seen(stream); }
  void on_stream_reset(uint32_t stream, ResetReason) override { open.erase(stream); }

  // Some open stream picked by |b|, or 0.
  uint32_t pick(uint8_t b) const {
    if (open.empty()) return 0;
    auto it = open.begin();
    std::advance(it, b % open.size());
    return *it;
  }
  void drop(uint32_t stream, ResetReason reason) {
    session->reset(stream, reason);
    open.erase(stream);
    dropped.insert(stream);
  }
};

// Reads the script.
struct Script {
  const uint8_t* p;
  const uint8_t* end;
  bool done() const { return p >= end; }
  uint8_t next() { return p < end ? *p++ : 0; }
};

// Moves |from|'s output to |to|, with at most |budget| of DATA; |flip| (when not 0) xors that
// byte into the output at |at|. Returns false once |to| failed.
bool deliver(Peer& from, Peer& to, size_t budget, uint8_t flip, uint8_t at, uint64_t now) {
  const size_t all = from.session->output_bytes();
  Bytes out;
  from.session->take_output(out, budget);
  if (budget == SIZE_MAX && out.size() < all) die();  // Framing only adds bytes.
  if (flip != 0 && !out.empty()) out[at % out.size()] ^= flip;
  const bool was_failed = to.session->failed();
  const Status s = to.session->receive(out, now);
  if (was_failed && s.ok()) die();  // A failed session stays failed.
  if (!s.ok() && !to.session->failed()) die();
  return s.ok();
}

const std::vector<HeaderField> kRequest = {{":method", "GET"},
                                           {":scheme", "http"},
                                           {":authority", "example.com"},
                                           {":path", "/"},
                                           {"cookie", "a=1"}};
const std::vector<HeaderField> kResponse = {{"content-type", "text/html"}, {"set-cookie", "b=2"}};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Script in{data, data + size};
  Peer edge(true), agent(false);
  uint64_t now = 0;
  Bytes payload(70000);
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<uint8_t>(i * 7);
  for (int op = 0; op < 4096 && !in.done(); ++op) {
    const uint8_t code = in.next();
    const uint8_t arg = in.next();
    switch (code % 14) {
      case 0: {  // The edge opens a stream.
        auto id = edge.session->submit_request({}, kRequest, (arg & 1) != 0);
        if (id.ok()) edge.open.insert(*id);
        break;
      }
      case 1:  // The edge sends request body.
        if (uint32_t s = edge.pick(arg); s != 0) {
          (void)edge.session->send_data(s, std::span<const uint8_t>(payload).first(arg * 200u),
                                        (arg & 1) != 0);
        }
        break;
      case 2:  // The agent answers, maybe with an interim head first.
        if (uint32_t s = agent.pick(arg); s != 0) {
          if ((arg & 2) != 0)
            (void)agent.session->submit_response(s, 103, BodyMode::kNone, {}, false);
          const BodyMode mode = (arg & 1) != 0 ? BodyMode::kStream : BodyMode::kNone;
          (void)agent.session->submit_response(s, 200, mode, kResponse, mode == BodyMode::kNone);
        }
        break;
      case 3:  // The agent sends response body.
        if (uint32_t s = agent.pick(arg); s != 0) {
          (void)agent.session->send_data(s, std::span<const uint8_t>(payload).first(arg * 270u),
                                         (arg & 1) != 0);
        }
        break;
      case 4:  // Trailers.
        if (uint32_t s = agent.pick(arg); s != 0)
          (void)agent.session->submit_trailers(s, kResponse);
        break;
      case 5:  // A reset, from either side.
        if ((arg & 1) != 0) {
          if (uint32_t s = edge.pick(arg >> 1); s != 0) edge.drop(s, ResetReason::kCancel);
        } else if (uint32_t s = agent.pick(arg >> 1); s != 0) {
          agent.session->reset_after_data(s);
        }
        break;
      case 6:  // Time passes: pings, dead links, answers awaited, bytes acknowledged.
        now += arg * 50u;
        if ((arg & 1) != 0) edge.session->expect_answer(now);
        if ((arg & 2) != 0) agent.session->written(now);
        (void)edge.session->on_timeout(now);
        (void)agent.session->on_timeout(now);
        break;
      case 7:  // Consumers stop or start taking bytes.
        edge.consume = (arg & 1) != 0;
        agent.consume = (arg & 2) != 0;
        break;
      case 8:  // A drain.
        ((arg & 1) != 0 ? edge : agent).session->goaway(GoawayCode::kShutdown, "fuzz");
        break;
      case 9:  // Late consumption.
        if (uint32_t s = edge.pick(arg); s != 0) edge.session->consume(s, arg * 1000u);
        if (uint32_t s = agent.pick(arg); s != 0) agent.session->consume(s, arg * 1000u);
        break;
      case 10:  // Edge to agent, whole or with a budget.
        (void)deliver(edge, agent, (arg & 1) != 0 ? SIZE_MAX : arg * 300u, 0, 0, now);
        break;
      case 11:  // Agent to edge.
        (void)deliver(agent, edge, (arg & 1) != 0 ? SIZE_MAX : arg * 300u, 0, 0, now);
        break;
      case 12: {  // A corrupted byte on the way to the agent.
        const uint8_t at = in.next();
        (void)deliver(edge, agent, SIZE_MAX, arg | 1, at, now);
        break;
      }
      case 13: {  // Raw bytes from the script to the agent.
        const size_t n = std::min<size_t>(arg, static_cast<size_t>(in.end - in.p));
        (void)agent.session->receive(std::span<const uint8_t>(in.p, n), now);
        in.p += n;
        break;
      }
    }
  }
  // Settle: whatever is left crosses, as long as both live.
  for (int round = 0; round < 64; ++round) {
    if (edge.session->failed() || agent.session->failed()) break;
    if (edge.session->output_bytes() == 0 && agent.session->output_bytes() == 0) break;
    if (!deliver(edge, agent, SIZE_MAX, 0, 0, now)) break;
    if (!deliver(agent, edge, SIZE_MAX, 0, 0, now)) break;
  }
  return 0;
}
