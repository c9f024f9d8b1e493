#pragma once
// The one mapping between HTTP/1.1 heads and tunnel header fields (proto/PROTOCOL.md §3-4).
//
//   edge:  client request --request_fields--> REQUEST fields
//   agent: REQUEST fields --parse_request_fields, backend_request--> backend request
//   agent: backend response head --response_fields--> RESPONSE fields (interim heads too)
//   edge:  RESPONSE fields, trailers --http_headers--> the client's response head
//
// On the tunnel a field name is lower-case, the pseudo-fields (":method", ...) come first, and
// no hop-by-hop field crosses (RFC 9110 §7.6.1): the side that encodes drops them, and the agent
// drops them again from what it decodes, since a request's fields are the peer's word only.
// Each side adds its own policy around this (the agent Via and
// Accept-Encoding: identity; which response fields the agent keeps back).

#include <chrono>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/http/message.h"
#include "proto/headers.h"
#include "proto/status.h"

namespace coilgun::tunnel {

// Header fields owned, for a session to encode: views() borrows them, so the list must outlive
// the call it is passed to (the session copies what it keeps).
class FieldList {
 public:
  void add(std::string_view name, std::string value);  // The name is lower-cased.
  std::vector<proto::HeaderField> views() const;
  const std::vector<std::pair<std::string, std::string>>& items() const { return fields_; }

 private:
  std::vector<std::pair<std::string, std::string>> fields_;
};

// What a tunnel REQUEST says (PROTOCOL.md §3).
struct TunnelRequest {
  std::string method;
  std::string scheme = "http";
  // The target's authority: the Host the backend receives. Empty when the client named none
  // (HTTP/1.0 without Host), and then the backend receives an empty Host.
  std::string authority;
  std::string path;     // Origin-form, or "*" for OPTIONS.
  std::string upgrade;  // The protocols the client asked to switch to; empty: none.
  // The edge route's options: how long the agent waits for the backend's head
  // (":backend-timeout", 1 ms to a day), and whether private responses are delta-coded
  // (false: ":private: no-delta").
  std::optional<std::chrono::milliseconds> backend_timeout;
  bool private_deltas = true;
  std::vector<http::Header> headers;  // End-to-end fields, as the client named them.
};

// The REQUEST fields for |r|: the pseudo-fields, then its headers lower-cased, without
// hop-by-hop fields, Host (it is ":authority") and Expect (the edge answers it), and with
// |client_ip| appended to X-Forwarded-For (after the hop-by-hop fields went, so a client
// cannot make the proxy drop it by naming it in Connection) and X-Forwarded-Proto set to the
// request's scheme (replacing any the client sent).
FieldList request_fields(const TunnelRequest& r, std::string_view client_ip);

// The request |fields| carry. Unknown pseudo-fields are dropped and a ":backend-timeout"
// outside its range is ignored (PROTOCOL.md §3); without ":authority" the request's Host field
// names the authority. Error kMalformed: no ":method" or no ":path".
Result<TunnelRequest> parse_request_fields(std::span<const proto::HeaderField> fields);

// The HTTP/1.1 request for the backend: |r|'s headers (as parse_request_fields left them: no
// hop-by-hop fields) with Host set to its authority, and "Upgrade: <r.upgrade>" with "Connection:
// upgrade" when it asks for one.
http::RequestHead backend_request(TunnelRequest&& r);

// The RESPONSE (or interim head's) fields for a backend's header fields: lower-cased, without
// hop-by-hop fields. |keep_upgrade|: the head answers an upgrade request, and its Upgrade field
// (the protocol switched to, or those a 426 asks for) crosses; the edge's server puts
// "Connection: upgrade" back.
FieldList response_fields(std::vector<http::Header> headers, bool keep_upgrade);

// A RESPONSE's, interim head's or trailer block's fields as HTTP/1.1 fields, for the client.
// Copied as they are: the client connection drops hop-by-hop fields and refuses what HTTP/1.1
// cannot carry.
std::vector<http::Header> http_headers(std::span<const proto::HeaderField> fields);

}  // namespace coilgun::tunnel
