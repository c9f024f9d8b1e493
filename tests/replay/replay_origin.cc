// coilgun-replay-origin: the mock origin of coilgun-replay. Answers each request with the
// response recorded for it, in capture order when one request was recorded several times (the
// last one again once they run out).
//
//   coilgun-replay-origin --listen HOST:PORT --index DIR/index.json
//
// index.json (written by coilgun-replay): {"entries": [{"method", "host", "target", "status",
// "headers": [[name, value], ...], "body": "file name relative to the index"}]}. A request
// matches on method, Host (lower case, port removed) and target. Bodies are read from disk per
// request, so a capture larger than memory replays. Unknown requests get 404.
//
// It logs one JSON line {"msg":"listening","role":"origin","address":...} when ready.

#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/http/server.h"
#include "common/net/loop.h"
#include "tests/fixtures/serve.h"

using namespace coilgun;
namespace fs = std::filesystem;

namespace {

struct Recorded {
  int status = 200;
  std::vector<http::Header> headers;
  fs::path body;
};

// Recorded responses per request key, each queue in capture order.
using Index = std::map<std::string, std::deque<Recorded>>;

std::string key_of(std::string_view method, std::string_view host, std::string_view target) {
  if (!host.empty() && host.front() == '[') {
    host = host.substr(1, host.find(']') - 1);  // An IPv6 literal, brackets and port removed.
  } else {
    host = host.substr(0, host.find(':'));
  }
  std::string key(method);
  key += '\n';
  for (char c : host) key += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  key += '\n';
  key += target;
  return key;
}

Index load_index(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + file.string());
  const nlohmann::json doc = nlohmann::json::parse(in);
  Index index;
  for (const auto& e : doc.at("entries")) {
    Recorded r;
    r.status = e.at("status").get<int>();
    for (const auto& h : e.at("headers"))
      r.headers.push_back({h.at(0).get<std::string>(), h.at(1).get<std::string>()});
    r.body = file.parent_path() / e.at("body").get<std::string>();
    index[key_of(e.at("method").get<std::string>(), e.at("host").get<std::string>(),
                 e.at("target").get<std::string>())]
        .push_back(std::move(r));
  }
  return index;
}

std::vector<uint8_t> read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)),
                              std::istreambuf_iterator<char>());
}

class ReplayOrigin : public http::Server {
 public:
  ReplayOrigin(uv::Loop& loop, Index index)
      : http::Server(loop, http::ServerOptions{}), index_(std::move(index)) {}

  void on_request(http::ServerConnection& c) override {
    if (c.request().expects_continue()) c.send_continue();
  }

  // Answered once the request (with any body) is in: a pipelined next request waits.
  void on_request_end(http::ServerConnection& c) override {
    const http::RequestHead& req = c.request();
    const std::string host(http::find(req.headers, "host").value_or(""));
    auto it = index_.find(key_of(req.method, host, req.target));
    if (it == index_.end()) return not_found(c);
    std::deque<Recorded>& queue = it->second;
    const Recorded r = queue.front();
    if (queue.size() > 1) queue.pop_front();  // The last one stays for any repeat.
    http::ResponseHead head;
    head.status = r.status;
    head.headers = r.headers;
    if (r.status == 204 || r.status == 304 || (r.status >= 100 && r.status < 200)) {
      (void)c.respond_head(std::move(head), http::ResponseFraming::kNone);
    } else {
      const std::vector<uint8_t> body = read_file(r.body);
      (void)c.respond_head(std::move(head), http::ResponseFraming::kContentLength, body.size());
      c.respond_body(body);
    }
    c.respond_end();
  }

 private:
  static void not_found(http::ServerConnection& c) {
    c.respond_simple(404, "not in the capture\n", false);
  }

  Index index_;
};

}  // namespace

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:0", index_file;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--listen") {
      listen = argv[i + 1];
    } else if (a == "--index") {
      index_file = argv[i + 1];
    } else {
      index_file.clear();
      break;
    }
  }
  if (index_file.empty() || argc % 2 == 0) {
    std::fprintf(stderr, "usage: coilgun-replay-origin --listen HOST:PORT --index FILE\n");
    return 2;
  }
  Index index;
  try {
    index = load_index(index_file);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "coilgun-replay-origin: %s: %s\n", index_file.c_str(), e.what());
    return 2;
  }
  uv::Loop loop;
  ReplayOrigin origin(loop, std::move(index));
  const size_t colon = listen.rfind(':');
  return fixtures::serve(loop, origin, listen.substr(0, colon),
                         static_cast<uint16_t>(std::stoi(listen.substr(colon + 1))),
                         "coilgun-replay-origin");
}
