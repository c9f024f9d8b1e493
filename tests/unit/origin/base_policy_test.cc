#include "origin/base_policy.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <memory>
#include <string>
#include <vector>

using coilgun::origin::BasePolicy;
using coilgun::proto::VersionId;

namespace {

using Hold = BasePolicy::Hold;

constexpr uint64_t kPending = BasePolicy::kPendingBaseMs;
constexpr uint64_t kMinAge = BasePolicy::kMinBaseAgeMs;
constexpr uint64_t kT0 = 50000;  // A loop time well past the start.

VersionId v(uint64_t n) { return VersionId{.hi = n, .lo = n}; }

// "|prefix||n|" (built by appending: GCC 12 warns falsely on "literal" + std::string).
std::string name(const char* prefix, size_t n) {
  std::string s = prefix;
  s += std::to_string(n);
  return s;
}

// An exchange for |key| at |now| that makes |id| the key's base and ends; returns the key's
// state's identity.
std::shared_ptr<const void> based(BasePolicy& policy, const std::string& key, VersionId id,
                                  uint64_t now) {
  Hold k = policy.key_started(key, {}, now);
  REQUIRE(policy.claim_base(k, id, now));
  return k.key_id();
}

}  // namespace

TEST_CASE("BasePolicy makes a key's first version its base at once, unconfirmed", "[base_policy]") {
  BasePolicy policy;
  auto k = policy.key_started("k", {}, kT0);
  CHECK(policy.state(k).running == 1);
  CHECK(policy.state(k).since_ms == 0);
  CHECK(policy.state(k).confirmed);
  CHECK(policy.claim_base(k, v(1), kT0));
  CHECK(policy.state(k).base == v(1));
  CHECK(policy.state(k).since_ms == kT0);
  CHECK_FALSE(policy.state(k).confirmed);
}

TEST_CASE("BasePolicy makes a first version the base even while other exchanges run",
          "[base_policy]") {
  BasePolicy policy;
  // A loop time younger than kMinBaseAgeMs: only "no base made yet" lets the claim through.
  const uint64_t now = kMinAge / 2;
  auto a = policy.key_started("k", {}, now);
  auto b = policy.key_started("k", {}, now);
  CHECK(a.key_id() == b.key_id());
  CHECK(policy.state(a).running == 2);
  CHECK(policy.claim_base(a, v(1), now));
  CHECK(policy.state(a).base == v(1));
  CHECK(policy.state(a).since_ms == now);
}

TEST_CASE("BasePolicy keeps at most one unconfirmed base until kPendingBaseMs has passed",
          "[base_policy]") {
  BasePolicy policy;
  auto k = policy.key_started("k", {}, kT0);
  REQUIRE(policy.claim_base(k, v(1), kT0));
  k.release();
  // Alone (running 1): only the unconfirmed base holds the next one back.
  auto next = policy.key_started("k", {}, kT0 + 10);
  REQUIRE(policy.state(next).running == 1);
  CHECK_FALSE(policy.claim_base(next, v(2), kT0 + kPending - 1));
  CHECK(policy.state(next).base == v(1));
  CHECK(policy.state(next).since_ms == kT0);
  CHECK_FALSE(policy.state(next).confirmed);
  // Never listed back for kPendingBaseMs: taken as lost, and replaced.
  CHECK(policy.claim_base(next, v(2), kT0 + kPending));
  CHECK(policy.state(next).base == v(2));
  CHECK(policy.state(next).since_ms == kT0 + kPending);
  CHECK_FALSE(policy.state(next).confirmed);
}

TEST_CASE("BasePolicy confirms a base when a request lists it back, and then takes a newer one",
          "[base_policy]") {
  BasePolicy policy;
  auto first = based(policy, "k", v(1), kT0);
  auto k = policy.key_started("k", std::vector<VersionId>{v(9), v(1)}, kT0 + 10);
  CHECK(k.key_id() == first);  // One state per key.
  CHECK(policy.state(k).confirmed);
  CHECK(policy.state(k).running == 1);
  // Confirmed, and no other exchange runs: no wait at all.
  CHECK(policy.claim_base(k, v(2), kT0 + 20));
  CHECK(policy.state(k).base == v(2));
  CHECK(policy.state(k).since_ms == kT0 + 20);
  CHECK_FALSE(policy.state(k).confirmed);  // The new base waits to be listed back in turn.
}

TEST_CASE("BasePolicy confirms only the current base, whatever else a request lists",
          "[base_policy]") {
  BasePolicy policy;
  based(policy, "k", v(1), kT0);
  auto k = policy.key_started("k", std::vector<VersionId>{v(7), v(8)}, kT0 + 10);
  CHECK_FALSE(policy.state(k).confirmed);
  k.release();
  // A confirmed base stays confirmed when later requests do not list it.
  k = policy.key_started("k", std::vector<VersionId>{v(1)}, kT0 + 20);
  CHECK(policy.state(k).confirmed);
  k.release();
  k = policy.key_started("k", {}, kT0 + 30);
  CHECK(policy.state(k).confirmed);
  REQUIRE(policy.claim_base(k, v(2), kT0 + 40));
  k.release();
  // The previous base listed back does not confirm the new one.
  k = policy.key_started("k", std::vector<VersionId>{v(1)}, kT0 + 50);
  CHECK_FALSE(policy.state(k).confirmed);
  CHECK_FALSE(policy.claim_base(k, v(3), kT0 + 60));
  CHECK(policy.state(k).base == v(2));
}

TEST_CASE("BasePolicy keeps a base at least kMinBaseAgeMs while other exchanges for the key run",
          "[base_policy]") {
  BasePolicy policy;
  based(policy, "k", v(1), kT0);
  auto a = policy.key_started("k", std::vector<VersionId>{v(1)}, kT0 + 100);
  auto b = policy.key_started("k", std::vector<VersionId>{v(1)}, kT0 + 100);
  REQUIRE(policy.state(a).confirmed);
  REQUIRE(policy.state(a).running == 2);
  // Counted from when the base was made, not from when the exchanges started.
  CHECK_FALSE(policy.claim_base(a, v(2), kT0 + kMinAge - 1));
  CHECK(policy.state(a).base == v(1));
  CHECK(policy.state(a).confirmed);
  CHECK(policy.claim_base(b, v(2), kT0 + kMinAge));
  CHECK(policy.state(a).base == v(2));
  CHECK(policy.state(a).since_ms == kT0 + kMinAge);
  // Once the other exchange is over, a confirmed base gives way at once.
  a.release();
  auto c = policy.key_started("k", std::vector<VersionId>{v(2)}, kT0 + kMinAge + 1);
  REQUIRE(policy.state(c).running == 2);  // b and c.
  b.release();
  CHECK(policy.claim_base(c, v(3), kT0 + kMinAge + 2));
  CHECK(policy.state(c).base == v(3));
}

TEST_CASE("BasePolicy counts every exchange of a key, and keeps keys apart", "[base_policy]") {
  BasePolicy policy;
  auto a1 = policy.key_started("a", {}, kT0);
  auto a2 = policy.key_started("a", {}, kT0);
  auto b = policy.key_started("b", {}, kT0);
  CHECK(a1.key_id() == a2.key_id());
  CHECK(policy.state(a1).running == 2);
  CHECK(b.key_id() != a1.key_id());
  CHECK(policy.state(b).running == 1);
  REQUIRE(policy.claim_base(a1, v(1), kT0));
  CHECK(policy.state(b).since_ms == 0);
  CHECK(policy.state(b).confirmed);
  CHECK(policy.claim_base(b, v(2), kT0 + 1));  // a's unconfirmed base is not b's.
  CHECK(policy.state(a1).base == v(1));
  CHECK(policy.state(b).base == v(2));
}

TEST_CASE("BasePolicy sweeps idle keys whose base is old once kKeySweep keys are held",
          "[base_policy]") {
  BasePolicy policy;
  const uint64_t late = kT0 + std::max(kPending, kMinAge);
  auto idle = based(policy, "idle", v(1), kT0);           // Ends at kT0: old by |late|.
  auto young = based(policy, "young", v(2), kT0 + 1);     // One millisecond short of old.
  auto running = policy.key_started("running", {}, kT0);  // Never ends.
  REQUIRE(policy.claim_base(running, v(3), kT0));
  const auto never = policy.key_started("never", {}, kT0).key_id();  // No base made; ended.
  size_t held = 4;
  while (held < BasePolicy::kKeySweep - 1) {
    based(policy, name("filler", held++), v(4), kT0);
  }
  // Below kKeySweep keys nothing is swept, however old.
  CHECK(policy.key_started("idle", {}, late).key_id() == idle);
  based(policy, "last", v(5), kT0);  // kKeySweep keys now.
  // The next start sweeps first: its own key's old state is gone too.
  auto again = policy.key_started("idle", {}, late);
  CHECK(again.key_id() != idle);
  CHECK(policy.state(again).since_ms == 0);
  CHECK(policy.state(again).confirmed);
  CHECK(policy.state(again).running == 1);
  CHECK(policy.state(again).base == VersionId{});
  CHECK(policy.key_started("never", {}, late).key_id() != never);
  // Kept: a key whose base is not old yet, and a key an exchange still runs for.
  CHECK(policy.key_started("young", {}, late).key_id() == young);
  CHECK(policy.key_started("running", {}, late).key_id() == running.key_id());
  CHECK(policy.state(running).base == v(3));
}

TEST_CASE("BasePolicy sweeps again only once the keys held have doubled", "[base_policy]") {
  BasePolicy policy;
  const uint64_t late = kT0 + 10 * std::max(kPending, kMinAge);
  std::vector<Hold> first;
  for (size_t i = 0; i < BasePolicy::kKeySweep; ++i) {
    Hold k = policy.key_started(name("k", i), {}, kT0);  // All running.
    REQUIRE(policy.claim_base(k, v(1), kT0));
    first.push_back(std::move(k));
  }
  std::vector<Hold> extra;  // Running for the whole test: never swept.
  // A sweep that can take nothing: the next is due at twice the keys held, 2 * kKeySweep.
  extra.push_back(policy.key_started("extra0", {}, late));
  const auto k0 = first[0].key_id(), k1 = first[1].key_id();
  first.clear();  // All idle and old now.
  size_t held = BasePolicy::kKeySweep + 1;
  CHECK(policy.key_started("k0", {}, late).key_id() == k0);
  while (held < 2 * BasePolicy::kKeySweep) {
    extra.push_back(policy.key_started(name("extra", held++), {}, late));
    if (held == BasePolicy::kKeySweep + 2) {
      CHECK(policy.key_started("k1", {}, late).key_id() == k1);  // Still not due.
    }
  }
  // 2 * kKeySweep keys: this start sweeps, and the old idle ones go.
  CHECK(policy.key_started("k0", {}, late).key_id() != k0);
  CHECK(policy.key_started("k1", {}, late).key_id() != k1);
}

TEST_CASE("BasePolicy makes every version of a sequential client a base, however fast it asks",
          "[base_policy]") {
  // Issue #12 §0: one policy for every worker, and an exchange stops counting when it finishes.
  // Each request lists what the edge holds (the bases before it, newest first, at most 4) and
  // starts a millisecond after the previous exchange finished, whose object is deleted only
  // after the next one started (deferred deletion on its worker's loop).
  BasePolicy policy;
  std::vector<VersionId> edge_holds;
  Hold previous;
  for (uint64_t n = 1; n <= 20; ++n) {
    const uint64_t now = kT0 + n;
    Hold k = policy.key_started("k", edge_holds, now);
    previous = Hold();  // The previous exchange object goes only now.
    CHECK(policy.state(k).running == 1);
    REQUIRE(policy.claim_base(k, v(n), now));
    k.release();  // finish(): before its last DATA is flushed, so before the next request.
    edge_holds.insert(edge_holds.begin(), v(n));
    if (edge_holds.size() > 4) edge_holds.pop_back();
    previous = std::move(k);
  }
  CHECK(policy.state(policy.key_started("k", {}, kT0 + 21)).base == v(20));
}

TEST_CASE("BasePolicy counts exchanges that finished but are not deleted yet as over",
          "[base_policy]") {
  BasePolicy policy;
  Hold first = policy.key_started("k", {}, kT0);
  REQUIRE(policy.claim_base(first, v(1), kT0));
  first.release();
  first.release();  // Idempotent.
  Hold second = policy.key_started("k", std::vector<VersionId>{v(1)}, kT0 + 1);
  CHECK(policy.state(second).running == 1);
  // The base is a millisecond old: only "no other exchange runs" lets v(2) through.
  CHECK(policy.claim_base(second, v(2), kT0 + 2));
  Hold moved = std::move(second);
  CHECK_FALSE(second);  // NOLINT: a moved-from Hold is empty, counts nothing, claims nothing.
  CHECK_FALSE(policy.claim_base(second, v(3), kT0 + 3));
  CHECK(policy.state(moved).running == 1);
}

TEST_CASE("BasePolicy takes a time behind the base's (another loop's clock) as no time at all",
          "[base_policy]") {
  // Workers' loops cache their time per turn: the worker that made the base may be a few
  // milliseconds ahead of the one claiming next. Such a base is young, never "old" (before,
  // the unsigned difference wrapped, and an unconfirmed base was taken as lost at once).
  BasePolicy policy;
  Hold a = policy.key_started("k", {}, kT0 + 5);
  REQUIRE(policy.claim_base(a, v(1), kT0 + 5));
  a.release();
  Hold b = policy.key_started("k", {}, kT0);
  CHECK_FALSE(policy.claim_base(b, v(2), kT0));
  CHECK(policy.state(b).base == v(1));
}
