#pragma once
// The key a page's versions are stored under (version_store.h): a namespace, the host and the
// request target, as Pingora's pingora-cache/src/key.rs keys its cache. The namespace keeps one
// site's versions from ever being a base for another's:
//
//   edge:   the agent's address (route.agent), so two agents' pages never mix;
//   agent:  its [namespace] setting (PROTOCOL.md §5), so two agents sharing a store never mix.
//
// The two sides build different keys for the same page, and never compare them: each store
// is private to its daemon, and the tunnel names versions by id, not by key.

#include <string>
#include <string_view>

namespace coilgun {

struct CacheKey {
  std::string_view ns;      // The namespace, as above.
  std::string_view host;    // The request's host, lower-cased (the edge drops the port).
  std::string_view target;  // The request-target as received: path and query.

  // The store's key: the three parts joined by '\n', a byte none of them can hold (the HTTP
  // parser and the config loader refuse it), so distinct keys never collide.
  std::string str() const {
    std::string out;
    out.reserve(ns.size() + host.size() + target.size() + 2);
    out.append(ns).append(1, '\n').append(host).append(1, '\n').append(target);
    return out;
  }
};

}  // namespace coilgun
