#include "edge/agent_directory.h"

#include <catch2/catch.hpp>

using coilgun::edge::AgentDirectory;

TEST_CASE("The agent directory counts tunnels across workers and lists those down first",
          "[edge][agents]") {
  AgentDirectory d;
  d.known("10.0.0.1:2408");
  d.known("10.0.0.2:2408");
  d.known("10.0.0.3:2408");
  d.tunnel_up("10.0.0.1:2408");
  d.tunnel_up("10.0.0.1:2408");  // A second worker's.
  d.rtt("10.0.0.1:2408", 7);
  d.tunnel_up("10.0.0.3:2408");
  d.tunnel_down("10.0.0.3:2408", "closed: peer reset");
  d.failed("10.0.0.3:2408", "refused: connection refused");

  nlohmann::json j = d.to_json(10);
  CHECK(j["up"] == 1);
  CHECK(j["down"] == 1);
  CHECK(j["idle"] == 1);
  REQUIRE(j["list"].size() == 3);
  CHECK(j["list"][0]["agent"] == "10.0.0.3:2408");  // Down first.
  CHECK(j["list"][0]["state"] == "down");
  CHECK(j["list"][0]["last_error"] == "refused: connection refused");
  CHECK(j["list"][1]["agent"] == "10.0.0.1:2408");
  CHECK(j["list"][1]["tunnels"] == 2);
  CHECK(j["list"][1]["rtt_ms"] == 7);
  CHECK_FALSE(j["list"][1].contains("last_error"));
  CHECK(j["list"][2]["state"] == "idle");

  // A close without loss leaves an agent idle, not down; a tunnel up clears the failure.
  d.tunnel_down("10.0.0.1:2408", "");
  d.tunnel_down("10.0.0.1:2408", "");
  d.tunnel_up("10.0.0.3:2408");
  j = d.to_json(1);
  CHECK(j["up"] == 1);
  CHECK(j["down"] == 0);
  CHECK(j["idle"] == 2);
  CHECK(j["list"].size() == 1);  // Counted all, listed |limit|.
}
