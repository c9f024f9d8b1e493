#pragma once
// The key a page's versions are stored under (version_store.h): a namespace, the host and the
// request target, as Pingora's pingora-cache/src/key.rs keys its cache. The namespace keeps one
// site's versions from ever being a base for another's:
//
//   edge:   empty. A host routes to one set of agents, which serve one origin, so the host
//           already names the site; and a route's agents share its keys, so that the next
//           agent by weight (or another edge, through memcached) can answer with a delta
//           against what the first one served. Should a host move to another origin, what the
//           edge names as held is unknown there: one response in full, never a wrong byte
//           (versions are named by content).
//   agent:  its [namespace] setting (PROTOCOL.md §5), so two agents sharing a store never mix.
//
// The two sides build different keys for the same page, and never compare them: the tunnel
// names versions by id, not by key.

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
