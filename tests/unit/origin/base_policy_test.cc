#include "origin/base_policy.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <memory>
#include <string>
#include <vector>

using coilgun::origin::BasePolicy;
using coilgun::proto::VersionId;

namespace {

using KeyState = BasePolicy::KeyState;

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

// What an exchange does when it is destroyed (Exchange::~Exchange).
void ended(KeyState& k) { --k.running; }

// An exchange for |key| at |now| that makes |id| the key's base and ends.
std::shared_ptr<KeyState> based(BasePolicy& policy, const std::string& key, VersionId id,
                                uint64_t now) {
  auto k = policy.key_started(key, {}, now);
  REQUIRE(policy.claim_base(*k, id, now));
  ended(*k);
  return k;
}

}  // namespace

TEST_CASE("BasePolicy makes a key's first version its base at once, unconfirmed",
          "[base_policy]") {
  BasePolicy policy;
  auto k = policy.key_started("k", {}, kT0);
  CHECK(k->running == 1);
  CHECK(k->since_ms == 0);
  CHECK(k->confirmed);
  CHECK(policy.claim_base(*k, v(1), kT0));
  CHECK(k->base == v(1));
  CHECK(k->since_ms == kT0);
  CHECK_FALSE(k->confirmed);
}

TEST_CASE("BasePolicy makes a first version the base even while other exchanges run",
          "[base_policy]") {
  BasePolicy policy;
  // A loop time younger than kMinBaseAgeMs: only "no base made yet" lets the claim through.
  const uint64_t now = kMinAge / 2;
  auto a = policy.key_started("k", {}, now);
  auto b = policy.key_started("k", {}, now);
  CHECK(a == b);
  CHECK(a->running == 2);
  CHECK(policy.claim_base(*a, v(1), now));
  CHECK(a->base == v(1));
  CHECK(a->since_ms == now);
}

TEST_CASE("BasePolicy keeps at most one unconfirmed base until kPendingBaseMs has passed",
          "[base_policy]") {
  BasePolicy policy;
  auto k = policy.key_started("k", {}, kT0);
  REQUIRE(policy.claim_base(*k, v(1), kT0));
  ended(*k);
  // Alone (running 1): only the unconfirmed base holds the next one back.
  auto next = policy.key_started("k", {}, kT0 + 10);
  REQUIRE(next->running == 1);
  CHECK_FALSE(policy.claim_base(*next, v(2), kT0 + kPending - 1));
  CHECK(next->base == v(1));
  CHECK(next->since_ms == kT0);
  CHECK_FALSE(next->confirmed);
  // Never listed back for kPendingBaseMs: taken as lost, and replaced.
  CHECK(policy.claim_base(*next, v(2), kT0 + kPending));
  CHECK(next->base == v(2));
  CHECK(next->since_ms == kT0 + kPending);
  CHECK_FALSE(next->confirmed);
}

TEST_CASE("BasePolicy confirms a base when a request lists it back, and then takes a newer one",
          "[base_policy]") {
  BasePolicy policy;
  auto first = based(policy, "k", v(1), kT0);
  auto k = policy.key_started("k", std::vector<VersionId>{v(9), v(1)}, kT0 + 10);
  CHECK(k == first);  // One state per key.
  CHECK(k->confirmed);
  CHECK(k->running == 1);
  // Confirmed, and no other exchange runs: no wait at all.
  CHECK(policy.claim_base(*k, v(2), kT0 + 20));
  CHECK(k->base == v(2));
  CHECK(k->since_ms == kT0 + 20);
  CHECK_FALSE(k->confirmed);  // The new base waits to be listed back in turn.
}

TEST_CASE("BasePolicy confirms only the current base, whatever else a request lists",
          "[base_policy]") {
  BasePolicy policy;
  based(policy, "k", v(1), kT0);
  auto k = policy.key_started("k", std::vector<VersionId>{v(7), v(8)}, kT0 + 10);
  CHECK_FALSE(k->confirmed);
  ended(*k);
  // A confirmed base stays confirmed when later requests do not list it.
  k = policy.key_started("k", std::vector<VersionId>{v(1)}, kT0 + 20);
  CHECK(k->confirmed);
  ended(*k);
  k = policy.key_started("k", {}, kT0 + 30);
  CHECK(k->confirmed);
  REQUIRE(policy.claim_base(*k, v(2), kT0 + 40));
  ended(*k);
  // The previous base listed back does not confirm the new one.
  k = policy.key_started("k", std::vector<VersionId>{v(1)}, kT0 + 50);
  CHECK_FALSE(k->confirmed);
  CHECK_FALSE(policy.claim_base(*k, v(3), kT0 + 60));
  CHECK(k->base == v(2));
}

TEST_CASE("BasePolicy keeps a base at least kMinBaseAgeMs while other exchanges for the key run",
          "[base_policy]") {
  BasePolicy policy;
  based(policy, "k", v(1), kT0);
  auto a = policy.key_started("k", std::vector<VersionId>{v(1)}, kT0 + 100);
  auto b = policy.key_started("k", std::vector<VersionId>{v(1)}, kT0 + 100);
  REQUIRE(a->confirmed);
  REQUIRE(a->running == 2);
  // Counted from when the base was made, not from when the exchanges started.
  CHECK_FALSE(policy.claim_base(*a, v(2), kT0 + kMinAge - 1));
  CHECK(a->base == v(1));
  CHECK(a->confirmed);
  CHECK(policy.claim_base(*b, v(2), kT0 + kMinAge));
  CHECK(a->base == v(2));
  CHECK(a->since_ms == kT0 + kMinAge);
  // Once the other exchange is over, a confirmed base gives way at once.
  ended(*a);
  auto c = policy.key_started("k", std::vector<VersionId>{v(2)}, kT0 + kMinAge + 1);
  REQUIRE(c->running == 2);  // b and c.
  ended(*b);
  CHECK(policy.claim_base(*c, v(3), kT0 + kMinAge + 2));
  CHECK(c->base == v(3));
}

TEST_CASE("BasePolicy counts every exchange of a key, and keeps keys apart", "[base_policy]") {
  BasePolicy policy;
  auto a1 = policy.key_started("a", {}, kT0);
  auto a2 = policy.key_started("a", {}, kT0);
  auto b = policy.key_started("b", {}, kT0);
  CHECK(a1 == a2);
  CHECK(a1->running == 2);
  CHECK(b != a1);
  CHECK(b->running == 1);
  REQUIRE(policy.claim_base(*a1, v(1), kT0));
  CHECK(b->since_ms == 0);
  CHECK(b->confirmed);
  CHECK(policy.claim_base(*b, v(2), kT0 + 1));  // a's unconfirmed base is not b's.
  CHECK(a1->base == v(1));
  CHECK(b->base == v(2));
}

TEST_CASE("BasePolicy sweeps idle keys whose base is old once kKeySweep keys are held",
          "[base_policy]") {
  BasePolicy policy;
  const uint64_t late = kT0 + std::max(kPending, kMinAge);
  auto idle = based(policy, "idle", v(1), kT0);          // Ends at kT0: old by |late|.
  auto young = based(policy, "young", v(2), kT0 + 1);    // One millisecond short of old.
  auto running = policy.key_started("running", {}, kT0);  // Never ends.
  REQUIRE(policy.claim_base(*running, v(3), kT0));
  auto never = policy.key_started("never", {}, kT0);  // No base made; ended.
  ended(*never);
  size_t held = 4;
  while (held < BasePolicy::kKeySweep - 1) {
    based(policy, name("filler", held++), v(4), kT0);
  }
  // Below kKeySweep keys nothing is swept, however old.
  CHECK(policy.key_started("idle", {}, late) == idle);
  ended(*idle);
  based(policy, "last", v(5), kT0);  // kKeySweep keys now.
  // The next start sweeps first: its own key's old state is gone too.
  auto again = policy.key_started("idle", {}, late);
  CHECK(again != idle);
  CHECK(again->since_ms == 0);
  CHECK(again->confirmed);
  CHECK(again->running == 1);
  CHECK(again->base == VersionId{});
  CHECK(policy.key_started("never", {}, late) != never);
  // Kept: a key whose base is not old yet, and a key an exchange still runs for.
  CHECK(policy.key_started("young", {}, late) == young);
  CHECK(policy.key_started("running", {}, late) == running);
  CHECK(running->base == v(3));
}

TEST_CASE("BasePolicy sweeps again only once the keys held have doubled", "[base_policy]") {
  BasePolicy policy;
  const uint64_t late = kT0 + 10 * std::max(kPending, kMinAge);
  std::vector<std::shared_ptr<KeyState>> first;
  for (size_t i = 0; i < BasePolicy::kKeySweep; ++i) {
    auto k = policy.key_started(name("k", i), {}, kT0);  // All running.
    REQUIRE(policy.claim_base(*k, v(1), kT0));
    first.push_back(std::move(k));
  }
  // A sweep that can take nothing: the next is due at twice the keys held, 2 * kKeySweep.
  policy.key_started("extra0", {}, late);
  for (auto& k : first) ended(*k);  // All idle and old now.
  size_t held = BasePolicy::kKeySweep + 1;
  CHECK(policy.key_started("k0", {}, late) == first[0]);
  ended(*first[0]);
  while (held < 2 * BasePolicy::kKeySweep) {
    policy.key_started(name("extra", held++), {}, late);  // Running: never swept.
    if (held == BasePolicy::kKeySweep + 2) {
      CHECK(policy.key_started("k1", {}, late) == first[1]);  // Still not due.
      ended(*first[1]);
    }
  }
  // 2 * kKeySweep keys: this start sweeps, and the old idle ones go.
  CHECK(policy.key_started("k0", {}, late) != first[0]);
  CHECK(policy.key_started("k1", {}, late) != first[1]);
}
