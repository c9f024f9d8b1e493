#pragma once
// TLS for the tunnel: mutually authenticated TLS 1.3 over memory BIOs, with no I/O of its own.
//
// The socket layer reads ciphertext from the network and feed()s it in; it sends whatever
// take_output() hands back. Plaintext goes in through write() and comes out through read().
// Because nothing here touches a socket, a client and a server session can be wired together
// in a unit test (tests/unit/common/tls/tls_test.cc does exactly that).
//
// The tunnel's rules (../shared/DESIGN.md, "The tunnel"):
//  * TLS 1.3 only, both ways (minimum and maximum protocol version).
//  * Mutual authentication: the agent (server) presents its certificate and REQUIRES a client
//    certificate; both sides verify the other against their configured CA.
//  * The edge (client) checks that the agent's certificate carries the name it dialled: a DNS
//    name (matched against DNS SANs, also sent as SNI) or an IP address (matched against IP
//    SANs; no SNI, as RFC 6066 section 3 forbids literal addresses there).
//  * ALPN names the protocol version, kAlpn. The server refuses a client that does not offer
//    it with a no_application_protocol alert; the client refuses a server that does not select
//    it (RFC 7301 section 3.2: "the server SHALL respond with a fatal 'no_application_protocol'
//    alert" when it supports none of the client's protocols).
//  * No session resumption: no tickets, no session cache. Every connection runs a full
//    handshake, so every connection verifies a certificate chain. Tunnels are long-lived, so
//    this costs nothing that matters.
//
// Errors follow proto/status.h: OpenSSL's error queue is cleared before each SSL_* call and
// converted once, here, into a Status with Code::kTls and a static message (see the k* message
// list in tls.cc, e.g. "peer certificate not trusted", "no ALPN"), attributed to
// Side::kTunnel. A clean close_notify from the peer is Code::kClosed. The OpenSSL detail
// behind an error is kept and formatted only on request (error_detail()), for the log line
// that records why a tunnel went down.

#include <openssl/ssl.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "proto/c_deleter.h"
#include "proto/status.h"

namespace coilgun::tls {

// The ALPN protocol id of tunnel protocol version 1 (proto/PROTOCOL.md).
inline constexpr std::string_view kAlpn = "coilgun/2";

// Which end of the tunnel a context or session is: the edge dials (kClient), the origin
// agent accepts (kServer).
enum class Role : uint8_t { kClient, kServer };

// PEM file paths a TLS context is built from. Plain data; copy freely.
// Also the daemons' [tls] table (config.h), whose keys carry the same names.
struct TlsFiles {
  // The CA (one or more PEM certificates) the peer's certificate must chain to.
  std::string ca;
  // This side's certificate, optionally followed by intermediates (leaf first).
  std::string cert;
  // The private key for cert (unencrypted PEM).
  std::string key;
  friend bool operator==(const TlsFiles&, const TlsFiles&) = default;
};

// An SSL_CTX configured for one role, built once from files and then never changed.
//
// Build it with server() or client(); share the result among worker threads as a
// std::shared_ptr<const TlsContext>: every method is const and safe to call from any thread
// at once, and sessions created on different loops may share one context (OpenSSL's SSL_CTX
// is safe for concurrent SSL_new once configured). A reload (SIGHUP) builds a new context;
// sessions keep the context they were created with alive until they end.
class TlsContext {
  struct Passkey {
    explicit Passkey() = default;
  };

 public:
  // Builds the agent's context: TLS 1.3 only, presents files.cert/key, requires a
  // client certificate that chains to files.ca, and selects kAlpn (refusing clients
  // that do not offer it). Reads the files now, on the calling thread; any thread.
  //
  // On failure returns Code::kConfig with a static message naming which file is wrong and
  // how ("TLS key does not match the certificate", ...). When |detail| is not null it receives
  // a human-readable explanation for logs and --check: the message, the path and OpenSSL's
  // own error strings. |detail| is left unchanged on success.
  static Result<std::shared_ptr<const TlsContext>> server(const TlsFiles& files,
                                                          std::string* detail = nullptr);

  // Builds the edge's context: TLS 1.3 only, presents files.cert/key as its client
  // certificate, verifies the agent against files.ca, offers kAlpn and refuses an agent
  // that does not select it. Errors and |detail| as for server().
  static Result<std::shared_ptr<const TlsContext>> client(const TlsFiles& files,
                                                          std::string* detail = nullptr);

  // Builds a context for dialling an HTTPS server (the edge's fallback to an origin, the
  // agent's https:// backend): TLS 1.2 or 1.3, the server's certificate verified against |ca|
  // (PEM; empty: the system's trust store) and against the name the session dials, ALPN
  // http/1.1 offered and none required, no resumption. With |cert| (and |key|, both PEM) it
  // presents that client certificate to servers that ask; empty: none. Errors and |detail| as
  // for server(); the dates and subject are empty.
  static Result<std::shared_ptr<const TlsContext>> web_client(const std::string& ca,
                                                              std::string* detail = nullptr,
                                                              const std::string& cert = "",
                                                              const std::string& key = "");

  // For server()/client() only (the passkey cannot be named elsewhere). Takes ownership of
  // |ctx|.
  TlsContext(Passkey, Role role, SSL_CTX* ctx, int64_t not_before_unix, int64_t not_after_unix,
             std::string subject);
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  Role role() const { return role_; }

  // When this side's own certificate expires (its notAfter), in seconds since the Unix
  // epoch. For logs ("certificate expires in N days") and --check. Any thread.
  int64_t not_after_unix() const { return not_after_unix_; }
  // When it became valid (its notBefore), likewise.
  int64_t not_before_unix() const { return not_before_unix_; }

  // This side's own certificate subject, RFC 2253 form ("CN=edge-1,O=Example"). For logs.
  // Valid for the life of this context. Any thread.
  const std::string& subject() const { return subject_; }

 private:
  friend class TlsSession;

  // server() and client(): validates |files| and configures an SSL_CTX for |role|.
  static Result<std::shared_ptr<const TlsContext>> build(Role role, const TlsFiles& files,
                                                         std::string* detail);

  Role role_;
  // A tunnel context: sessions must agree on kAlpn. False for web_client()'s.
  bool tunnel_ = true;
  std::unique_ptr<SSL_CTX, CDeleter<SSL_CTX_free>> ctx_;
  int64_t not_before_unix_;
  int64_t not_after_unix_;
  std::string subject_;
};

// Validates TLS files for start-up, --check and SIGHUP: builds the context for |role| (which
// checks the files are readable, parse, that the key matches the certificate and that the CA
// loads) and refuses a certificate that is not valid at |now_unix| (check_validity). Returns Ok
// or Code::kConfig; |detail| as for TlsContext::server(). Any thread.
Status check_files(const TlsFiles& files, Role role, int64_t now_unix,
                   std::string* detail = nullptr);
// Refuses |ctx|'s own certificate (from |cert_file|, for the message) when it has expired or is
// not yet valid at |now_unix| (seconds since the epoch; injected so tests control time): a
// daemon that started with it would be refused by every peer. Code::kConfig.
Status check_validity(const TlsContext& ctx, const std::string& cert_file, int64_t now_unix,
                      std::string* detail = nullptr);

// One TLS connection over two memory BIOs. Not thread-safe: it lives on one loop and only
// that loop's thread may call it.
//
// How the owner drives it:
//   1. Create it with server() or client(). A client queues its ClientHello right away.
//   2. Whenever the socket delivers bytes, feed() them; then read() until it returns 0.
//   3. Whenever there is plaintext to send, write() it (allowed before the handshake ends:
//      it is held and encrypted once the handshake completes).
//   4. After any of feed(), read(), write() or close(), call take_output() and send what it
//      appends (handshake records, application records, alerts, close_notify).
//   5. On an error from any call, still call take_output() once and send the result: it may
//      hold the fatal alert that tells the peer why (e.g. "unknown CA"). Then close the socket.
//
// Errors are sticky: after the first error every later feed()/read()/write() returns it
// again. Handshake failures are reported by feed(); failures after the handshake (corrupt
// records, alerts, the peer's close_notify) are reported by read(), which is where OpenSSL
// processes incoming records. A session does not enforce a handshake timeout; its owner does.
//
// Bounds. The session never buffers more than its owner gives it, and exposes how much it
// holds so the owner can apply watermarks:
//  * Incoming ciphertext waits in the read BIO until read() decrypts it
//    (pending_input_bytes()). The owner bounds it by not reading the socket while that is
//    above its high watermark, i.e. while its consumer of plaintext is not keeping up.
//  * Outgoing data waits as plaintext (written before the handshake completed) or as
//    ciphertext in the write BIO until take_output() (pending_output_bytes()). The owner
//    bounds it with its flow-control windows and by pausing writers above its watermark.
//  OpenSSL itself holds at most one record (about 16 KiB) each way. A memory BIO left empty
//  with more than kShrinkAboveBytes allocated is replaced by a fresh one, so a burst does not
//  pin its peak allocation for the rest of a long-lived tunnel.
class TlsSession {
  struct Passkey {
    explicit Passkey() = default;
  };

 public:
  // An empty memory BIO holding more than this many bytes of allocation is released.
  static constexpr size_t kShrinkAboveBytes = size_t{256} * 1024;

  // Creates the agent's side of a connection. |ctx| must come from TlsContext::server() and
  // is kept alive by the session. Returns Code::kInternal if |ctx| is a client context or
  // OpenSSL cannot allocate the session. Any thread; the session then belongs to the thread
  // that uses it.
  static Result<std::unique_ptr<TlsSession>> server(std::shared_ptr<const TlsContext> ctx);

  // Creates the edge's side of a connection and queues the ClientHello (take_output() it).
  // |ctx| must come from TlsContext::client(). |peer_name| is what the agent's certificate
  // must carry: an IPv4 or IPv6 literal (no brackets) is matched against IP SANs only;
  // anything else is a DNS name, matched against DNS SANs (no partial wildcards) and sent as
  // SNI. Returns Code::kConfig for an empty or unusable name, Code::kInternal for a server
  // context or an allocation failure. Any thread, as for server().
  static Result<std::unique_ptr<TlsSession>> client(std::shared_ptr<const TlsContext> ctx,
                                                    std::string_view peer_name);

  // For server()/client() only. The session registers its own address with OpenSSL (for the
  // verification callbacks), so it is neither copyable nor movable.
  TlsSession(Passkey, std::shared_ptr<const TlsContext> ctx, SSL* ssl);
  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;
  ~TlsSession();

  // Takes |ciphertext| read from the socket (copied; the span may be reused at once) and
  // advances the handshake as far as it can. Any amount is fine, down to one byte at a time.
  // Returns Ok, or the handshake's error (Code::kTls, or Code::kClosed if the peer closed
  // during the handshake). After the handshake it only queues the bytes: call read().
  Status feed(std::span<const uint8_t> ciphertext);

  // Decrypts into |out| and returns how many plaintext bytes were written there: at most
  // out.size(), and 0 when nothing more is available yet (more ciphertext is needed, or the
  // handshake has not completed). Call it until it returns 0 after each feed(). Returns
  // Code::kClosed once the peer's close_notify has been read (after every byte sent before
  // it), or Code::kTls for a corrupt record or a fatal alert from the peer. May queue output
  // (e.g. a KeyUpdate response): call take_output() afterwards.
  Result<size_t> read(std::span<uint8_t> out);

  // Encrypts |plaintext| into records (as many as needed; 1 MiB is fine) queued for
  // take_output(). Before the handshake completes the bytes are held and encrypted as soon
  // as it does, in order. Returns Code::kClosed after close() or after the peer's
  // close_notify, and the session's error if it has failed.
  Status write(std::span<const uint8_t> plaintext);

  // Appends all queued ciphertext to |out| and returns true if it appended anything. Works
  // in every state, including after an error (to send the alert) and after close().
  bool take_output(std::vector<uint8_t>& out);

  // Queues a close_notify (RFC 8446 section 6.1) after everything written so far; take_output()
  // then send it. Later write()s return Code::kClosed; read() keeps working so the owner can
  // drain what the peer sent until its own close_notify arrives. Before the handshake has
  // completed, or after an error, there is nothing to close cleanly: nothing is queued and
  // Ok is returned (the owner just closes the socket). Calling it twice is harmless.
  Status close();

  // True once the handshake has completed: the peer is authenticated and alpn() is kAlpn.
  // (On the client this happens one flight before the server has checked the client's
  // certificate; if the server refuses it, read() reports the server's alert.)
  bool handshake_done() const { return handshake_done_; }

  // True once the peer's close_notify came: it sends nothing more, and cleanly so.
  bool peer_closed() const;

  // The negotiated ALPN protocol ("coilgun/2"), or "" before the handshake completes. Valid
  // while the session lives.
  std::string_view alpn() const;

  // The peer certificate's subject, RFC 2253 form ("CN=edge-1,O=Example"), or "" if there is
  // none yet. Builds a string: call it for logs, once per connection, not per record.
  std::string peer_subject() const;

  // Bytes of ciphertext fed but not yet taken up by OpenSSL, which also holds up to one
  // partial record (about 16 KiB) of its own.
  size_t pending_input_bytes() const;

  // Bytes waiting to go out: plaintext held until the handshake completes plus ciphertext
  // not yet taken by take_output().
  size_t pending_output_bytes() const;

  // Frees both memory BIOs' buffers if they are empty (a no-op during the handshake): for a
  // connection going idle, which then holds no buffer it is not using (issue #13: the
  // handshake's flight left about 20 KiB in every idle tunnel).
  void release_buffers();

  // Ok, or the sticky error that ended this session (Code::kClosed after a clean close by the
  // peer).
  Status status() const { return failed_; }

  // For logs: the error's message followed by OpenSSL's reason and, for a certificate
  // failure, the X.509 verification error ("certificate has expired"). "" when the session has
  // not failed. Builds a string; call it once when logging the failure.
  std::string error_detail() const;

  Role role() const { return ctx_->role(); }

 private:
  friend class TlsContext;  // Installs the callbacks below.

  // OpenSSL callbacks, which reach the session through SSL_get_app_data(). Server: refuses a
  // ClientHello without ALPN; selects kAlpn. Client: refuses a server that did not select
  // kAlpn, then verifies its certificate chain.
  static int on_client_hello(SSL* ssl, int* alert, void* arg);
  static int on_alpn_select(SSL* ssl, const unsigned char** out, unsigned char* out_len,
                            const unsigned char* in, unsigned int in_len, void* arg);
  static int on_verify_server(X509_STORE_CTX* store, void* arg);
  // The web client's: OpenSSL's verification, remembering the names of a certificate that
  // does not carry the expected one, for error_detail().
  static int on_verify_web(X509_STORE_CTX* store, void* arg);

  // Runs SSL_do_handshake() and, when it completes, checks ALPN and flushes held plaintext.
  Status drive_handshake();
  // Encrypts |plaintext| now; requires a completed handshake.
  Status encrypt(std::span<const uint8_t> plaintext);
  // Converts OpenSSL's error queue (after an SSL_* call failed with |ssl_error|) into the
  // sticky status, remembering the detail for error_detail().
  Status fail(int ssl_error);
  Status fail_with(Status status);
  // Replaces an empty BIO whose allocation exceeds kShrinkAboveBytes (after the handshake).
  void maybe_shrink_buffers();
  // Replaces an empty BIO whose allocation exceeds |above| (after the handshake).
  void shrink_buffers(size_t above);

  std::shared_ptr<const TlsContext> ctx_;
  std::unique_ptr<SSL, CDeleter<SSL_free>> ssl_;
  BIO* rbio_ = nullptr;  // Owned by ssl_: ciphertext fed in, waiting for OpenSSL.
  BIO* wbio_ = nullptr;  // Owned by ssl_: ciphertext OpenSSL produced, waiting to be taken.
  std::vector<uint8_t> held_plaintext_;  // write()s before the handshake completed.
  Status failed_;
  unsigned long error_code_ = 0;  // OpenSSL's packed error behind failed_, for the detail.
  long verify_result_ = 0;        // X509_V_OK or the verification error behind failed_.
  bool handshake_done_ = false;
  bool close_sent_ = false;
  bool alpn_refused_ = false;  // Set by a callback when the peer's ALPN was unacceptable.
  std::string alpn_offered_;   // What a refused client offered, printable, for the detail.
  std::string expected_name_;  // Client: the name the server's certificate must carry.
  std::string peer_names_;     // Its names, when it carried another: for the detail.
};

}  // namespace coilgun::tls
