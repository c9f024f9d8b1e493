#include "origin/handshake_gate.h"

#include <catch2/catch.hpp>
#include <thread>
#include <vector>

using coilgun::origin::HandshakeGate;

TEST_CASE("HandshakeGate refuses a slot once the limit is pending and frees it on release",
          "[handshake_gate]") {
  HandshakeGate gate;
  HandshakeGate::Slot a = gate.try_enter(2);
  HandshakeGate::Slot b = gate.try_enter(2);
  CHECK(a);
  CHECK(b);
  CHECK(gate.pending() == 2);
  CHECK_FALSE(gate.try_enter(2));
  CHECK(gate.pending() == 2);  // A refusal takes nothing.

  a.release();
  CHECK_FALSE(a);
  CHECK(gate.pending() == 1);
  a.release();  // Twice is harmless.
  CHECK(gate.pending() == 1);
  HandshakeGate::Slot c = gate.try_enter(2);
  CHECK(c);
  CHECK(gate.pending() == 2);
}

TEST_CASE("HandshakeGate slots give their place back when destroyed, moved over or reassigned",
          "[handshake_gate]") {
  HandshakeGate gate;
  {
    HandshakeGate::Slot a = gate.try_enter(4);
    HandshakeGate::Slot moved = std::move(a);
    CHECK_FALSE(a);  // NOLINT(bugprone-use-after-move): checking the moved-from state.
    CHECK(moved);
    CHECK(gate.pending() == 1);
    HandshakeGate::Slot b = gate.try_enter(4);
    CHECK(gate.pending() == 2);
    b = std::move(moved);  // b's own place goes back; it now holds moved's.
    CHECK(gate.pending() == 1);
  }
  CHECK(gate.pending() == 0);
}

TEST_CASE("HandshakeGate applies a changed limit to the next connection", "[handshake_gate]") {
  HandshakeGate gate;
  std::vector<HandshakeGate::Slot> held(3);
  for (HandshakeGate::Slot& s : held) {
    s = gate.try_enter(3);
  }
  CHECK_FALSE(gate.try_enter(3));
  CHECK(gate.try_enter(4));  // Raised: one more (released at once, as a temporary).
  CHECK_FALSE(gate.try_enter(2));
  held.pop_back();
  CHECK_FALSE(gate.try_enter(2));  // Lowered below what is pending: refused until it drops.
  held.pop_back();
  CHECK(gate.try_enter(2));
}

TEST_CASE("HandshakeGate reports refusals at most once per interval, with the count since",
          "[handshake_gate]") {
  HandshakeGate gate;
  constexpr uint64_t kStep = HandshakeGate::kReportIntervalMs;
  CHECK(gate.refused(5000) == 1);  // The first refusal is reported at once.
  CHECK(gate.refused(5001) == 0);
  CHECK(gate.refused(5000 + kStep - 1) == 0);
  CHECK(gate.refused(5000 + kStep) == 3);  // The two held back, and this one.
  CHECK(gate.refused(5000 + kStep + 1) == 0);
  CHECK(gate.refused(5000 + 10 * kStep) == 2);
}

TEST_CASE("HandshakeGate never lets more than the limit in from several threads",
          "[handshake_gate]") {
  HandshakeGate gate;
  constexpr uint32_t kLimit = 8;
  constexpr int kThreads = 4;
  constexpr int kRounds = 2000;
  std::vector<std::vector<HandshakeGate::Slot>> held(kThreads);
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&gate, &mine = held[t]] {
      for (int i = 0; i < kRounds; ++i) {
        HandshakeGate::Slot s = gate.try_enter(kLimit);
        // Each thread would keep kLimit slots: together they ask for four times the limit.
        if (s && mine.size() < kLimit) {
          mine.push_back(std::move(s));
        }
      }
    });
  }
  size_t kept = 0;
  for (int t = 0; t < kThreads; ++t) {
    threads[t].join();
    kept += held[t].size();
  }
  CHECK(kept == kLimit);
  CHECK(gate.pending() == kLimit);
  held.clear();
  CHECK(gate.pending() == 0);
}

TEST_CASE("HandshakeGate bounds the slots one source may hold", "[handshake_gate]") {
  HandshakeGate gate;
  HandshakeGate::Refusal why = HandshakeGate::Refusal::kNone;
  HandshakeGate::Slot a = gate.try_enter(10, "10.0.0.1", 2, &why);
  HandshakeGate::Slot b = gate.try_enter(10, "10.0.0.1", 2, &why);
  CHECK((a && b && why == HandshakeGate::Refusal::kNone));
  CHECK_FALSE(gate.try_enter(10, "10.0.0.1", 2, &why));
  CHECK(why == HandshakeGate::Refusal::kSource);
  HandshakeGate::Slot other = gate.try_enter(10, "10.0.0.2", 2, &why);
  CHECK(other);  // Another source is not held back.
  CHECK(gate.pending() == 3);
  HandshakeGate::Slot moved = std::move(a);
  moved.release();  // The source's count goes with the slot, wherever it was moved.
  HandshakeGate::Slot again = gate.try_enter(10, "10.0.0.1", 2, &why);
  CHECK(again);
  CHECK_FALSE(gate.try_enter(3, "10.0.0.3", 2, &why));  // b, other, again: three pending.
  CHECK(why == HandshakeGate::Refusal::kFull);
}
