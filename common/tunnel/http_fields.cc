#include "common/tunnel/http_fields.h"

#include <charconv>

namespace coilgun::tunnel {
namespace {

// ":backend-timeout": decimal milliseconds, 1 to 86400000 (a day); nullopt otherwise.
std::optional<std::chrono::milliseconds> parse_timeout(std::string_view ms) {
  uint64_t v = 0;
  const auto [end, ec] = std::from_chars(ms.data(), ms.data() + ms.size(), v);
  if (ec != std::errc() || end != ms.data() + ms.size() || v == 0 || v > 86400000) {
    return std::nullopt;
  }
  return std::chrono::milliseconds(v);
}

}  // namespace

void FieldList::add(std::string_view name, std::string value) {
  fields_.emplace_back(http::to_lower(name), std::move(value));
}

std::vector<proto::HeaderField> FieldList::views() const {
  std::vector<proto::HeaderField> out;
  out.reserve(fields_.size());
  for (const auto& [n, v] : fields_) out.push_back({n, v});
  return out;
}

FieldList request_fields(const TunnelRequest& r, std::string_view client_ip) {
  FieldList out;
  out.add(":method", r.method);
  out.add(":scheme", r.scheme);
  if (!r.authority.empty()) out.add(":authority", r.authority);
  out.add(":path", r.path);
  if (r.backend_timeout) out.add(":backend-timeout", std::to_string(r.backend_timeout->count()));
  if (!r.private_deltas) out.add(":private", "no-delta");
  if (!r.upgrade.empty()) out.add(":upgrade", r.upgrade);
  std::vector<http::Header> headers = r.headers;
  http::remove_hop_by_hop(headers);
  http::remove(headers, "host");
  http::remove(headers, "expect");
  http::add_forwarded_for(headers, client_ip);
  http::set(headers, "X-Forwarded-Proto", r.scheme);  // What the client spoke, never its claim.
  for (auto& h : headers) out.add(h.name, std::move(h.value));
  return out;
}

Result<TunnelRequest> parse_request_fields(std::span<const proto::HeaderField> fields) {
  TunnelRequest r;
  bool has_authority = false;
  for (const proto::HeaderField& f : fields) {
    if (f.name == ":method") {
      r.method = f.value;
    } else if (f.name == ":scheme") {
      r.scheme = f.value;
    } else if (f.name == ":path") {
      r.path = f.value;
    } else if (f.name == ":authority") {
      r.authority = f.value;
      has_authority = true;
    } else if (f.name == ":backend-timeout") {
      r.backend_timeout = parse_timeout(f.value);
    } else if (f.name == ":private") {
      r.private_deltas = f.value != "no-delta";
    } else if (f.name == ":upgrade") {
      r.upgrade = f.value;
    } else if (!f.name.empty() && f.name[0] != ':') {
      r.headers.push_back({std::string(f.name), std::string(f.value)});
    }
  }
  if (r.method.empty() || r.path.empty()) {
    return Status(Code::kMalformed, "a request needs :method and :path");
  }
  if (!has_authority) r.authority = http::find(r.headers, "host").value_or("");
  http::remove_hop_by_hop(r.headers);
  return r;
}

http::RequestHead backend_request(TunnelRequest&& r) {
  http::RequestHead head;
  head.method = std::move(r.method);
  head.target = std::move(r.path);
  head.headers = std::move(r.headers);
  if (!r.upgrade.empty()) {
    http::set(head.headers, "Upgrade", r.upgrade);
    http::set(head.headers, "Connection", "upgrade");
  }
  http::set(head.headers, "Host", r.authority);
  return head;
}

FieldList response_fields(std::vector<http::Header> headers, bool keep_upgrade) {
  std::optional<std::string> upgrade;
  if (keep_upgrade) {
    if (auto u = http::find(headers, "upgrade")) upgrade = std::string(*u);
  }
  http::remove_hop_by_hop(headers);
  if (upgrade) headers.push_back({"upgrade", std::move(*upgrade)});
  FieldList out;
  for (auto& h : headers) out.add(h.name, std::move(h.value));
  return out;
}

std::vector<http::Header> http_headers(std::span<const proto::HeaderField> fields) {
  std::vector<http::Header> out;
  out.reserve(fields.size());
  for (const proto::HeaderField& f : fields)
    out.push_back({std::string(f.name), std::string(f.value)});
  return out;
}

}  // namespace coilgun::tunnel
