#include "common/tls/tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <ctime>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "proto/c_deleter.h"
#include "tests/unit/common/tls/test_certs.h"

using namespace coilgun;
using coilgun::test::TestCerts;
using coilgun::tls::Role;
using coilgun::tls::TlsContext;
using coilgun::tls::TlsFiles;
using coilgun::tls::TlsSession;

namespace {

using Bytes = std::vector<uint8_t>;
using ContextPtr = std::shared_ptr<const TlsContext>;

Bytes to_bytes(std::string_view s) { return Bytes(s.begin(), s.end()); }

Bytes random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  Bytes out(n);
  for (auto& b : out) b = static_cast<uint8_t>(rng());
  return out;
}

std::string message_of(const Status& s) { return s.message(); }

ContextPtr server_ctx(const TlsFiles& files) {
  auto ctx = TlsContext::server(files);
  INFO(ctx.status().to_string());
  REQUIRE(ctx.ok());
  return *ctx;
}

ContextPtr client_ctx(const TlsFiles& files) {
  auto ctx = TlsContext::client(files);
  INFO(ctx.status().to_string());
  REQUIRE(ctx.ok());
  return *ctx;
}

// One end of a connection under test: the session, the first error it reported, and all the
// plaintext it delivered.
struct End {
  std::unique_ptr<TlsSession> session;
  Status status;
  Bytes received;

  // Reads plaintext until the session has none left, remembering the first error.
  void drain() {
    uint8_t buf[16384];
    while (status.ok()) {
      auto n = session->read(buf);
      if (!n.ok()) {
        status = n.status();
        return;
      }
      if (*n == 0) return;
      received.insert(received.end(), buf, buf + *n);
    }
  }

  // What the socket layer does with bytes from the network. Once the session has failed the
  // connection is gone: further bytes are dropped.
  void feed(std::span<const uint8_t> ciphertext) {
    if (!status.ok()) return;
    status = session->feed(ciphertext);
    drain();
  }
};

End server_end(const ContextPtr& ctx) {
  auto s = TlsSession::server(ctx);
  INFO(s.status().to_string());
  REQUIRE(s.ok());
  return End{std::move(*s), {}, {}};
}

End client_end(const ContextPtr& ctx, std::string_view peer_name) {
  auto s = TlsSession::client(ctx, peer_name);
  INFO(s.status().to_string());
  REQUIRE(s.ok());
  return End{std::move(*s), {}, {}};
}

// Moves everything |from| has queued to |to|, |chunk| bytes per feed. Returns true if there was
// anything to move.
bool transfer(End& from, End& to, size_t chunk) {
  Bytes out;
  if (!from.session->take_output(out)) return false;
  for (size_t i = 0; i < out.size(); i += chunk) {
    to.feed(std::span<const uint8_t>(out).subspan(i, std::min(chunk, out.size() - i)));
  }
  return true;
}

// Shuttles ciphertext between two sessions until neither has anything to send.
void pump(End& a, End& b, size_t chunk = SIZE_MAX) {
  for (int round = 0; round < 10000; ++round) {
    const bool moved_ab = transfer(a, b, chunk);
    const bool moved_ba = transfer(b, a, chunk);
    if (!moved_ab && !moved_ba) return;
  }
  FAIL("the sessions never stopped talking");
}

// A plain OpenSSL peer, configured in ways TlsContext never is (no ALPN, no certificate), to
// check that our sessions refuse it.
struct RawPeer {
  std::unique_ptr<SSL_CTX, CDeleter<SSL_CTX_free>> ctx;
  std::unique_ptr<SSL, CDeleter<SSL_free>> ssl;
  BIO* rbio = nullptr;  // Owned by ssl.
  BIO* wbio = nullptr;  // Owned by ssl.
  bool handshake_done = false;
  unsigned long error = 0;  // First OpenSSL error once it failed.
  Bytes received;

  bool failed() const { return error != 0; }

  void step() {
    if (failed()) return;
    ERR_clear_error();
    if (!handshake_done) {
      const int rc = SSL_do_handshake(ssl.get());
      if (rc == 1) {
        handshake_done = true;
      } else {
        if (SSL_get_error(ssl.get(), rc) != SSL_ERROR_WANT_READ) record_failure();
        return;
      }
    }
    uint8_t buf[4096];
    size_t n = 0;
    while (SSL_read_ex(ssl.get(), buf, sizeof(buf), &n) == 1) {
      received.insert(received.end(), buf, buf + n);
    }
    if (SSL_get_error(ssl.get(), 0) != SSL_ERROR_WANT_READ) record_failure();
  }

  void record_failure() {
    error = ERR_peek_error();
    if (error == 0) error = 1;  // Failed without a queued error (e.g. EOF).
    ERR_clear_error();
  }
};

// |alpn_wire| is in ALPN wire format; empty offers none.
RawPeer raw_client(const TestCerts& certs, bool with_cert, std::string_view alpn_wire) {
  RawPeer p;
  p.ctx.reset(SSL_CTX_new(TLS_client_method()));
  REQUIRE(p.ctx != nullptr);
  SSL_CTX_set_verify(p.ctx.get(), SSL_VERIFY_NONE, nullptr);
  if (with_cert) {
    REQUIRE(SSL_CTX_use_certificate_chain_file(p.ctx.get(), certs.client_cert.c_str()) == 1);
    REQUIRE(SSL_CTX_use_PrivateKey_file(p.ctx.get(), certs.client_key_file.c_str(),
                                        SSL_FILETYPE_PEM) == 1);
  }
  if (!alpn_wire.empty()) {
    REQUIRE(SSL_CTX_set_alpn_protos(p.ctx.get(),
                                    reinterpret_cast<const unsigned char*>(alpn_wire.data()),
                                    static_cast<unsigned int>(alpn_wire.size())) == 0);
  }
  p.ssl.reset(SSL_new(p.ctx.get()));
  REQUIRE(p.ssl != nullptr);
  p.rbio = BIO_new(BIO_s_mem());
  p.wbio = BIO_new(BIO_s_mem());
  SSL_set_bio(p.ssl.get(), p.rbio, p.wbio);
  SSL_set_connect_state(p.ssl.get());
  return p;
}

// A server that presents the real server certificate but never selects ALPN.
RawPeer raw_server_without_alpn(const TestCerts& certs) {
  RawPeer p;
  p.ctx.reset(SSL_CTX_new(TLS_server_method()));
  REQUIRE(p.ctx != nullptr);
  REQUIRE(SSL_CTX_use_certificate_chain_file(p.ctx.get(), certs.server_cert.c_str()) == 1);
  REQUIRE(SSL_CTX_use_PrivateKey_file(p.ctx.get(), certs.server_key_file.c_str(),
                                      SSL_FILETYPE_PEM) == 1);
  p.ssl.reset(SSL_new(p.ctx.get()));
  REQUIRE(p.ssl != nullptr);
  p.rbio = BIO_new(BIO_s_mem());
  p.wbio = BIO_new(BIO_s_mem());
  SSL_set_bio(p.ssl.get(), p.rbio, p.wbio);
  SSL_set_accept_state(p.ssl.get());
  return p;
}

// Shuttles ciphertext between a session and a raw OpenSSL peer until both are quiet.
void pump_raw(End& end, RawPeer& raw) {
  for (int round = 0; round < 1000; ++round) {
    bool moved = false;
    Bytes out;
    if (end.session->take_output(out)) {
      moved = true;
      if (!raw.failed()) {
        size_t written = 0;
        REQUIRE(BIO_write_ex(raw.rbio, out.data(), out.size(), &written) == 1);
      }
    }
    raw.step();
    const size_t pending = BIO_ctrl_pending(raw.wbio);
    if (pending > 0) {
      moved = true;
      Bytes in(pending);
      size_t got = 0;
      REQUIRE(BIO_read_ex(raw.wbio, in.data(), in.size(), &got) == 1);
      in.resize(got);
      end.feed(in);
    }
    if (!moved) return;
  }
  FAIL("the peers never stopped talking");
}

// A connected pair, handshake done.
struct Pair {
  End client;
  End server;
};

Pair connected_pair(const TestCerts& certs, std::string_view peer_name = "127.0.0.1") {
  Pair p{client_end(client_ctx(certs.client_files()), peer_name),
         server_end(server_ctx(certs.server_files()))};
  pump(p.client, p.server);
  INFO("client: " << p.client.status.to_string() << ", server: " << p.server.status.to_string());
  REQUIRE(p.client.status.ok());
  REQUIRE(p.server.status.ok());
  REQUIRE(p.client.session->handshake_done());
  REQUIRE(p.server.session->handshake_done());
  return p;
}

}  // namespace

// ---- Contexts ----

TEST_CASE("TlsContext loads server and client contexts and reports their certificates") {
  TestCerts certs;
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  auto server = server_ctx(certs.server_files());
  auto client = client_ctx(certs.client_files());
  CHECK(server->role() == Role::kServer);
  CHECK(client->role() == Role::kClient);
  // The test certificates are valid for one day.
  CHECK(server->not_after_unix() > now + 24 * 3600 - 120);
  CHECK(server->not_after_unix() < now + 24 * 3600 + 120);
  CHECK_THAT(server->subject(), Catch::Contains("CN=agent.coilgun.test"));
  CHECK_THAT(client->subject(), Catch::Contains("CN=edge-1"));
}

TEST_CASE("TlsContext reports an unreadable file as a config error naming the path") {
  TestCerts certs;
  TlsFiles files = certs.server_files();
  files.cert = certs.path("missing.pem");
  std::string detail;
  auto ctx = TlsContext::server(files, &detail);
  REQUIRE(ctx.status().code() == Code::kConfig);
  CHECK(message_of(ctx.status()) == "TLS certificate file is not readable");
  CHECK_THAT(detail, Catch::Contains(files.cert));
  CHECK_THAT(detail, Catch::Contains("No such file"));
}

TEST_CASE("TlsContext reports an unset path as a config error") {
  TestCerts certs;
  TlsFiles files = certs.client_files();
  files.ca.clear();
  auto ctx = TlsContext::client(files);
  REQUIRE(ctx.status().code() == Code::kConfig);
  CHECK(message_of(ctx.status()) == "TLS CA file is not set");
}

TEST_CASE("TlsContext refuses a key that does not match the certificate") {
  TestCerts certs;
  TlsFiles files = certs.server_files();
  files.key = certs.client_key_file;
  std::string detail;
  auto ctx = TlsContext::server(files, &detail);
  REQUIRE(ctx.status().code() == Code::kConfig);
  CHECK(message_of(ctx.status()) == "TLS key does not match the certificate");
  CHECK_THAT(detail, Catch::Contains(certs.client_key_file));
}

TEST_CASE("TlsContext refuses files that hold the wrong kind of PEM") {
  TestCerts certs;
  SECTION("a key as the CA") {
    TlsFiles files = certs.server_files();
    files.ca = certs.server_key_file;
    auto ctx = TlsContext::server(files);
    REQUIRE(ctx.status().code() == Code::kConfig);
    CHECK(message_of(ctx.status()) == "TLS CA file holds no usable PEM certificate");
  }
  SECTION("a key as the certificate") {
    TlsFiles files = certs.client_files();
    files.cert = certs.client_key_file;
    auto ctx = TlsContext::client(files);
    REQUIRE(ctx.status().code() == Code::kConfig);
    CHECK(message_of(ctx.status()) == "TLS certificate file holds no usable PEM certificate");
  }
  SECTION("a certificate as the key") {
    TlsFiles files = certs.client_files();
    files.key = certs.client_cert;
    auto ctx = TlsContext::client(files);
    REQUIRE(ctx.status().code() == Code::kConfig);
    CHECK(message_of(ctx.status()) == "TLS key file holds no usable PEM private key");
  }
}

TEST_CASE("check_files accepts valid files and refuses an expired certificate") {
  TestCerts certs;
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  CHECK(tls::check_files(certs.server_files(), Role::kServer, now).ok());
  CHECK(tls::check_files(certs.client_files(), Role::kClient, now).ok());

  std::string detail;
  const Status expired =
      tls::check_files(certs.expired_server_files(), Role::kServer, now, &detail);
  REQUIRE(expired.code() == Code::kConfig);
  CHECK(message_of(expired) == "TLS certificate has expired");
  CHECK_THAT(detail, Catch::Contains("notAfter"));

  // The same valid certificate, checked as if it were an hour earlier: not yet valid.
  const Status early = tls::check_files(certs.client_files(), Role::kClient, now - 3600, &detail);
  REQUIRE(early.code() == Code::kConfig);
  CHECK(message_of(early) == "TLS certificate is not yet valid");
  CHECK(detail.find("notBefore") != std::string::npos);
  // The same valid certificate, checked as if two days had passed.
  CHECK(tls::check_files(certs.client_files(), Role::kClient, now + 2 * 24 * 3600).code() ==
        Code::kConfig);
}

TEST_CASE("TlsSession refuses a context of the other role and an empty peer name") {
  TestCerts certs;
  auto server = server_ctx(certs.server_files());
  auto client = client_ctx(certs.client_files());
  CHECK(TlsSession::server(client).status().code() == Code::kInternal);
  CHECK(TlsSession::client(server, "localhost").status().code() == Code::kInternal);
  CHECK(TlsSession::client(client, "").status().code() == Code::kConfig);
}

// ---- Handshake and data ----

TEST_CASE("TlsSession client and server complete the handshake and exchange data both ways") {
  TestCerts certs;
  Pair p = connected_pair(certs);
  CHECK(p.client.session->alpn() == "coilgun/2");
  CHECK(p.server.session->alpn() == "coilgun/2");
  CHECK_THAT(p.server.session->peer_subject(), Catch::Contains("CN=edge-1"));
  CHECK_THAT(p.client.session->peer_subject(), Catch::Contains("CN=agent.coilgun.test"));

  REQUIRE(p.client.session->write(to_bytes("hello agent")).ok());
  REQUIRE(p.server.session->write(to_bytes("hello edge")).ok());
  pump(p.client, p.server);
  CHECK(p.server.received == to_bytes("hello agent"));
  CHECK(p.client.received == to_bytes("hello edge"));
  CHECK(p.client.status.ok());
  CHECK(p.server.status.ok());
}

TEST_CASE("TlsSession sends data written before the handshake once it completes") {
  TestCerts certs;
  End client = client_end(client_ctx(certs.client_files()), "localhost");
  End server = server_end(server_ctx(certs.server_files()));
  REQUIRE(client.session->write(to_bytes("early ")).ok());
  REQUIRE(client.session->write(to_bytes("bytes")).ok());
  CHECK(client.session->pending_output_bytes() >= 11);
  CHECK(client.session->alpn().empty());
  pump(client, server);
  REQUIRE(server.status.ok());
  CHECK(server.received == to_bytes("early bytes"));
}

TEST_CASE("TlsSession carries 1 MiB each way and holds nothing once drained") {
  TestCerts certs;
  Pair p = connected_pair(certs);
  const Bytes up = random_bytes(1 << 20, 1);
  const Bytes down = random_bytes(1 << 20, 2);
  REQUIRE(p.client.session->write(up).ok());
  REQUIRE(p.server.session->write(down).ok());
  // Everything written waits as ciphertext until the owner takes it.
  CHECK(p.client.session->pending_output_bytes() > up.size());
  pump(p.client, p.server);
  REQUIRE(p.client.status.ok());
  REQUIRE(p.server.status.ok());
  CHECK(p.server.received == up);
  CHECK(p.client.received == down);
  CHECK(p.client.session->pending_output_bytes() == 0);
  CHECK(p.server.session->pending_input_bytes() == 0);
  CHECK(p.client.session->pending_input_bytes() == 0);
}

TEST_CASE("TlsSession works when ciphertext arrives one byte at a time") {
  TestCerts certs;
  End client = client_end(client_ctx(certs.client_files()), "127.0.0.1");
  End server = server_end(server_ctx(certs.server_files()));
  pump(client, server, 1);
  REQUIRE(client.status.ok());
  REQUIRE(server.status.ok());
  REQUIRE(client.session->handshake_done());
  REQUIRE(server.session->handshake_done());

  // More than two full records (16 KiB each) in each direction.
  const Bytes up = random_bytes(40000, 3);
  const Bytes down = random_bytes(40000, 4);
  REQUIRE(client.session->write(up).ok());
  REQUIRE(server.session->write(down).ok());
  pump(client, server, 1);
  REQUIRE(client.status.ok());
  REQUIRE(server.status.ok());
  CHECK(server.received == up);
  CHECK(client.received == down);
}

// ---- Authentication ----

TEST_CASE("TlsSession server refuses a client certificate from another CA") {
  TestCerts certs;
  End client = client_end(client_ctx(certs.other_client_files()), "127.0.0.1");
  End server = server_end(server_ctx(certs.server_files()));
  REQUIRE(client.session->write(to_bytes("let me in")).ok());
  pump(client, server);
  REQUIRE(server.status.code() == Code::kTls);
  CHECK(message_of(server.status) == "peer certificate not trusted");
  CHECK(server.status.side() == Side::kTunnel);
  CHECK_THAT(server.session->error_detail(), Catch::Contains("certificate"));
  CHECK(server.received.empty());
  CHECK_FALSE(server.session->handshake_done());
  // The server's alert tells the client why.
  REQUIRE(client.status.code() == Code::kTls);
  CHECK(message_of(client.status) == "peer rejected our certificate");
}

TEST_CASE("TlsSession server refuses a client that presents no certificate") {
  TestCerts certs;
  End server = server_end(server_ctx(certs.server_files()));
  RawPeer client = raw_client(certs, /*with_cert=*/false,
                              std::string_view("\x09"
                                               "coilgun/2",
                                               10));
  pump_raw(server, client);
  REQUIRE(server.status.code() == Code::kTls);
  CHECK(message_of(server.status) == "peer sent no certificate");
  CHECK(server.received.empty());
  REQUIRE(client.failed());
  CHECK(ERR_GET_REASON(client.error) == SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED);
}

TEST_CASE("TlsSession server accepts a plain OpenSSL client with a trusted certificate") {
  // The raw peer used by the refusal tests does complete a handshake when configured right,
  // so their failures come from what they leave out.
  TestCerts certs;
  End server = server_end(server_ctx(certs.server_files()));
  RawPeer client = raw_client(certs, /*with_cert=*/true,
                              std::string_view("\x09"
                                               "coilgun/2",
                                               10));
  pump_raw(server, client);
  INFO(server.status.to_string());
  REQUIRE(server.status.ok());
  CHECK(server.session->handshake_done());
  CHECK_FALSE(client.failed());
  CHECK(client.handshake_done);
}

TEST_CASE("TlsSession client accepts the agent by IP SAN and by DNS name") {
  TestCerts certs("agent.coilgun.test");
  for (const char* name : {"127.0.0.1", "localhost", "agent.coilgun.test"}) {
    INFO(name);
    Pair p = connected_pair(certs, name);
    CHECK(p.client.session->alpn() == "coilgun/2");
  }
}

TEST_CASE("TlsSession client refuses an agent whose certificate lacks the expected name") {
  TestCerts certs("agent.coilgun.test");
  for (const char* name : {"other.coilgun.test", "coilgun.test", "127.0.0.2", "::1"}) {
    INFO(name);
    End client = client_end(client_ctx(certs.client_files()), name);
    End server = server_end(server_ctx(certs.server_files()));
    REQUIRE(client.session->write(to_bytes("secret")).ok());
    pump(client, server);
    REQUIRE(client.status.code() == Code::kTls);
    CHECK(message_of(client.status) == "peer certificate does not carry the expected name");
    CHECK_THAT(client.session->error_detail(), Catch::Contains("mismatch"));
    // Both names are in the log line (issue #14): what was expected, what the peer carries.
    CHECK_THAT(client.session->error_detail(),
               Catch::Contains(std::string("expected ") + name + ", the certificate carries: ") &&
                   Catch::Contains("agent.coilgun.test"));
    CHECK_FALSE(client.session->handshake_done());
    CHECK(server.status.code() == Code::kTls);
    CHECK(server.received.empty());
  }
}

TEST_CASE("TlsSession client refuses an agent whose certificate is not from its CA") {
  TestCerts certs;
  TlsFiles files = certs.client_files();
  files.ca = certs.other_ca_cert;
  End client = client_end(client_ctx(files), "127.0.0.1");
  End server = server_end(server_ctx(certs.server_files()));
  pump(client, server);
  REQUIRE(client.status.code() == Code::kTls);
  CHECK(message_of(client.status) == "peer certificate not trusted");
  REQUIRE(server.status.code() == Code::kTls);
  CHECK(message_of(server.status) == "peer rejected our certificate");
}

TEST_CASE("TlsSession client refuses an agent whose certificate has expired") {
  TestCerts certs;
  End client = client_end(client_ctx(certs.client_files()), "127.0.0.1");
  End server = server_end(server_ctx(certs.expired_server_files()));
  pump(client, server);
  REQUIRE(client.status.code() == Code::kTls);
  CHECK(message_of(client.status) == "peer certificate has expired");
  CHECK(server.status.code() == Code::kTls);
}

// ---- ALPN ----

TEST_CASE("TlsSession client refuses a server that does not select ALPN") {
  TestCerts certs;
  End client = client_end(client_ctx(certs.client_files()), "127.0.0.1");
  RawPeer server = raw_server_without_alpn(certs);
  REQUIRE(client.session->write(to_bytes("frames")).ok());
  pump_raw(client, server);
  REQUIRE(client.status.code() == Code::kTls);
  CHECK(message_of(client.status) == "no ALPN");
  CHECK_FALSE(client.session->handshake_done());
  CHECK(server.failed());
  CHECK(server.received.empty());
}

TEST_CASE("TlsSession server refuses a client that does not offer ALPN coilgun/2") {
  TestCerts certs;
  SECTION("no ALPN at all") {
    End server = server_end(server_ctx(certs.server_files()));
    RawPeer client = raw_client(certs, /*with_cert=*/true, {});
    pump_raw(server, client);
    REQUIRE(server.status.code() == Code::kTls);
    CHECK(message_of(server.status) == "no ALPN");
    REQUIRE(client.failed());
    CHECK(ERR_GET_REASON(client.error) == SSL_R_TLSV1_ALERT_NO_APPLICATION_PROTOCOL);
  }
  SECTION("other protocols only: h2, and the previous tunnel protocol") {
    End server = server_end(server_ctx(certs.server_files()));
    RawPeer client = raw_client(certs, /*with_cert=*/true,
                                std::string_view("\x02"
                                                 "h2"
                                                 "\x09"
                                                 "coilgun/1",
                                                 13));
    pump_raw(server, client);
    REQUIRE(server.status.code() == Code::kTls);
    CHECK(message_of(server.status) == "no ALPN");
    // The log line says which versions met: an edge of an older release offers coilgun/1.
    CHECK_THAT(server.session->error_detail(),
               Catch::Contains("this side speaks coilgun/2, the peer offered: h2 coilgun/1"));
    REQUIRE(client.failed());
    CHECK(ERR_GET_REASON(client.error) == SSL_R_TLSV1_ALERT_NO_APPLICATION_PROTOCOL);
  }
}

TEST_CASE("TlsSession server selects coilgun/2 among several offered protocols") {
  TestCerts certs;
  End server = server_end(server_ctx(certs.server_files()));
  RawPeer client = raw_client(certs, /*with_cert=*/true,
                              std::string_view("\x02"
                                               "h2"
                                               "\x09"
                                               "coilgun/2",
                                               13));
  pump_raw(server, client);
  REQUIRE(server.status.ok());
  CHECK(server.session->alpn() == "coilgun/2");
}

// ---- Closing ----

TEST_CASE("TlsSession reports the peer's close_notify as kClosed after the data before it") {
  TestCerts certs;
  Pair p = connected_pair(certs);
  REQUIRE(p.client.session->write(to_bytes("last words")).ok());
  REQUIRE(p.client.session->close().ok());
  CHECK(p.client.session->write(to_bytes("more")).code() == Code::kClosed);
  pump(p.client, p.server);
  CHECK(p.server.received == to_bytes("last words"));
  REQUIRE(p.server.status.code() == Code::kClosed);
  CHECK(message_of(p.server.status) == "peer closed the TLS session");
  CHECK(p.server.session->write(to_bytes("too late")).code() == Code::kClosed);
  // The closing side still reads until the peer answers with its own close_notify.
  CHECK(p.client.status.ok());
  REQUIRE(p.server.session->close().ok());
  pump(p.client, p.server);
  CHECK(p.client.status.code() == Code::kClosed);
  CHECK(p.client.received.empty());
}

TEST_CASE("TlsSession closed before its handshake accepts nothing more") {
  TestCerts certs;
  End client = client_end(client_ctx(certs.client_files()), "localhost");
  End server = server_end(server_ctx(certs.server_files()));
  REQUIRE(transfer(client, server, SIZE_MAX));
  REQUIRE(server.status.ok());
  REQUIRE(server.session->close().ok());
  CHECK(server.session->feed(to_bytes("x")).code() == Code::kClosed);
  CHECK(server.session->write(to_bytes("x")).code() == Code::kClosed);
}

// ---- Bad bytes ----

TEST_CASE("TlsSession reports corrupted ciphertext as a TLS error") {
  TestCerts certs;
  Pair p = connected_pair(certs);
  REQUIRE(p.client.session->write(random_bytes(1000, 5)).ok());
  Bytes record;
  REQUIRE(p.client.session->take_output(record));
  record[record.size() / 2] ^= 0x01;
  p.server.feed(record);
  REQUIRE(p.server.status.code() == Code::kTls);
  CHECK(message_of(p.server.status) == "TLS record failed authentication");
  CHECK(p.server.received.empty());
  // Errors are sticky.
  CHECK(p.server.session->read(std::span<uint8_t>(record)).status().code() == Code::kTls);
  CHECK(p.server.session->write(to_bytes("x")).code() == Code::kTls);
  // The server's alert reaches the client as a TLS error too.
  pump(p.client, p.server);
  CHECK(p.client.status.code() == Code::kTls);
}

TEST_CASE("TlsSession never delivers a record with any byte flipped") {
  TestCerts certs;
  auto client = client_ctx(certs.client_files());
  auto server = server_ctx(certs.server_files());
  const Bytes plaintext = to_bytes("thirty-two bytes of a tunnel fr");
  // One record: 5-byte header, the plaintext, its content type, a 16-byte tag.
  const size_t record_size = 5 + plaintext.size() + 1 + 16;
  for (size_t i = 0; i < record_size; ++i) {
    INFO("flipped byte " << i);
    End c = client_end(client, "127.0.0.1");
    End s = server_end(server);
    pump(c, s);
    REQUIRE(s.session->handshake_done());
    REQUIRE(c.session->write(plaintext).ok());
    Bytes record;
    REQUIRE(c.session->take_output(record));
    REQUIRE(record.size() == record_size);
    record[i] ^= 0xff;
    s.feed(record);
    // Either a clean TLS error now or, when a length byte grew, once the bytes it claims
    // have arrived.
    if (s.status.ok()) s.feed(Bytes(20000, 0));
    CHECK(s.status.code() == Code::kTls);
    CHECK(s.received.empty());
  }
}

TEST_CASE("TlsSession server reports garbage as a TLS error") {
  TestCerts certs;
  auto ctx = server_ctx(certs.server_files());
  SECTION("plain HTTP") {
    End server = server_end(ctx);
    server.feed(to_bytes("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"));
    REQUIRE(server.status.code() == Code::kTls);
    CHECK(message_of(server.status) == "peer sent plain HTTP, not TLS");
  }
  SECTION("random bytes") {
    End server = server_end(ctx);
    server.feed(random_bytes(1000, 6));
    REQUIRE(server.status.code() == Code::kTls);
    CHECK_FALSE(server.session->handshake_done());
  }
  SECTION("a handshake record header followed by garbage") {
    End server = server_end(ctx);
    Bytes bytes = {0x16, 0x03, 0x01, 0x00, 0x40};
    const Bytes tail = random_bytes(0x40, 7);
    bytes.insert(bytes.end(), tail.begin(), tail.end());
    for (uint8_t b : bytes) server.feed(std::span<const uint8_t>(&b, 1));
    REQUIRE(server.status.code() == Code::kTls);
    CHECK(server.received.empty());
  }
}

TEST_CASE("TlsSession client reports garbage in place of a ServerHello as a TLS error") {
  TestCerts certs;
  End client = client_end(client_ctx(certs.client_files()), "localhost");
  Bytes hello;
  REQUIRE(client.session->take_output(hello));
  CHECK(hello.at(0) == 0x16);  // A handshake record: the ClientHello was queued on creation.
  client.feed(random_bytes(500, 8));
  REQUIRE(client.status.code() == Code::kTls);
}
