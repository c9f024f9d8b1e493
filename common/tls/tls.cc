#include "common/tls/tls.h"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/buffer.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <system_error>
#include <utility>

namespace coilgun::tls {
namespace {

// ---- Errors a session reports (static messages; Code::kTls unless noted). ----

constexpr Status tls_error(const char* message) {
  return Status(Code::kTls, message, Side::kTunnel);
}

// Our verification of the peer's certificate failed.
constexpr Status kNotTrusted = tls_error("peer certificate not trusted");
constexpr Status kNameMismatch = tls_error("peer certificate does not carry the expected name");
constexpr Status kPeerCertExpired = tls_error("peer certificate has expired");
constexpr Status kPeerCertNotYetValid = tls_error("peer certificate is not yet valid");
constexpr Status kPeerCertWrongUse = tls_error("peer certificate is not valid for this use");
constexpr Status kNoPeerCert = tls_error("peer sent no certificate");
// We refused the peer's ALPN: a client that did not offer kAlpn, a server that did not select
// it.
constexpr Status kNoAlpn = tls_error("no ALPN");
// The peer refused us with a fatal alert (RFC 8446 section 6.2).
constexpr Status kPeerRejectedCert = tls_error("peer rejected our certificate");
constexpr Status kPeerRequiresCert = tls_error("peer requires a certificate");
constexpr Status kPeerRefusedAlpn = tls_error("peer refused our ALPN");
constexpr Status kPeerHandshakeFailure = tls_error("peer failed the handshake");
constexpr Status kPeerAlert = tls_error("peer sent a fatal alert");
// The bytes themselves are wrong.
constexpr Status kNoSharedVersion = tls_error("no shared TLS version");
constexpr Status kPlainHttp = tls_error("peer sent plain HTTP, not TLS");
constexpr Status kMalformedRecord = tls_error("malformed TLS record");
constexpr Status kBadRecordMac = tls_error("TLS record failed authentication");
constexpr Status kTlsError = tls_error("TLS error");
// Clean endings (Code::kClosed).
constexpr Status kPeerClosed{Code::kClosed, "peer closed the TLS session", Side::kTunnel};
constexpr Status kClosedLocally{Code::kClosed, "TLS session closed locally", Side::kTunnel};

// TLS 1.2 suites of Mozilla's "intermediate" configuration (ssl-config.mozilla.org, v5.7), for
// web_client() contexts (the tunnel's speak TLS 1.3 only).
constexpr char kIntermediateTls12Ciphers[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305";

// ---- Configuration errors (Code::kConfig). ----

constexpr const char kCaUnset[] = "TLS CA file is not set";
constexpr const char kCaUnreadable[] = "TLS CA file is not readable";
constexpr const char kCaInvalid[] = "TLS CA file holds no usable PEM certificate";
constexpr const char kCertUnset[] = "TLS certificate file is not set";
constexpr const char kCertUnreadable[] = "TLS certificate file is not readable";
constexpr const char kCertInvalid[] = "TLS certificate file holds no usable PEM certificate";
constexpr const char kKeyUnset[] = "TLS key file is not set";
constexpr const char kKeyUnreadable[] = "TLS key file is not readable";
constexpr const char kKeyInvalid[] = "TLS key file holds no usable PEM private key";
constexpr const char kKeyMismatch[] = "TLS key does not match the certificate";
constexpr const char kCertExpired[] = "TLS certificate has expired";
constexpr const char kCertNotYetValid[] = "TLS certificate is not yet valid";
constexpr const char kContextFailed[] = "TLS context could not be configured";

// kAlpn in ALPN wire format: one length-prefixed protocol name (RFC 7301 section 3.1).
constexpr unsigned char kAlpnWire[] = {9, 'c', 'o', 'i', 'l', 'g', 'u', 'n', '/', '2'};
static_assert(sizeof(kAlpnWire) == kAlpn.size() + 1 && kAlpnWire[0] == kAlpn.size());

// The session id context a server must set when it verifies clients (OpenSSL refuses
// resumption without one; we never resume, but keep OpenSSL's invariant).
constexpr unsigned char kSessionIdContext[] = {'c', 'o', 'i', 'l', 'g', 'u', 'n'};

using BioPtr = std::unique_ptr<BIO, CDeleter<BIO_free>>;
using SslCtxPtr = std::unique_ptr<SSL_CTX, CDeleter<SSL_CTX_free>>;
using PKeyPtr = std::unique_ptr<EVP_PKEY, CDeleter<EVP_PKEY_free>>;

// Appends OpenSSL's error queue to |out| ("; error:...:reason (data)") and empties it.
void append_openssl_errors(std::string& out) {
  const char* data = nullptr;
  int flags = 0;
  unsigned long e = 0;
  while ((e = ERR_get_error_all(nullptr, nullptr, nullptr, &data, &flags)) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    out += "; ";
    out += buf;
    if ((flags & ERR_TXT_STRING) != 0 && data != nullptr && *data != '\0') {
      out += " (";
      out += data;
      out += ")";
    }
  }
}

// Returns Code::kConfig with |message|; fills |detail| (when given) with the message, the
// path, the system error |sys_errno| (when not 0) and OpenSSL's queued errors.
Status config_error(const char* message, const std::string& path, std::string* detail,
                    int sys_errno = 0) {
  if (detail != nullptr) {
    *detail = message;
    if (!path.empty()) {
      *detail += ": ";
      *detail += path;
    }
    if (sys_errno != 0) {
      *detail += ": ";
      *detail += std::error_code(sys_errno, std::generic_category()).message();
    }
    append_openssl_errors(*detail);
  }
  ERR_clear_error();
  return Status(Code::kConfig, message);
}

// Checks |path| is set and can be opened for reading.
Status check_readable(const std::string& path, const char* unset, const char* unreadable,
                      std::string* detail) {
  if (path.empty()) return config_error(unset, path, detail);
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    const int err = errno;
    return config_error(unreadable, path, detail, err);
  }
  std::fclose(f);
  return Status::Ok();
}

// Formats |name| as RFC 2253 ("CN=edge-1,O=Example"); "" on failure.
std::string name_to_string(const X509_NAME* name) {
  if (name == nullptr) return {};
  BioPtr bio{BIO_new(BIO_s_mem())};
  if (bio == nullptr || X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253) < 0) return {};
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  if (len <= 0 || data == nullptr) return {};
  return std::string(data, static_cast<size_t>(len));
}

// Returns |t| as seconds since the Unix epoch, or 0 when it cannot be read.
int64_t asn1_time_to_unix(const ASN1_TIME* t) {
  struct tm tm {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return 0;
  return static_cast<int64_t>(timegm(&tm));
}

// "2026-01-27 12:00:00 UTC".
std::string format_unix(int64_t unix_seconds) {
  const time_t t = static_cast<time_t>(unix_seconds);
  struct tm tm {};
  if (gmtime_r(&t, &tm) == nullptr) return std::to_string(unix_seconds);
  char buf[64];
  const size_t n = std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S UTC", &tm);
  return std::string(buf, n);
}

// What every context here shares: no resumption, so every connection verifies a certificate
// chain (see tls.h), and idle connections give back OpenSSL's record buffers.
void no_resumption(SSL_CTX* ctx) {
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
}

// Loads and validates files into a context for |role|; see TlsContext::server()/client(). The
// ALPN and verification callbacks are installed by TlsContext::build().
// Loads |ctx|'s own certificate (plus intermediates) from |cert| and its key from |key|.
Status use_own_certificate(SSL_CTX* ctx, const std::string& cert, const std::string& key_file,
                           std::string* detail) {
  if (SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) != 1) {
    return config_error(kCertInvalid, cert, detail);
  }
  PKeyPtr key;
  {
    BioPtr bio{BIO_new_file(key_file.c_str(), "r")};
    if (bio != nullptr) key.reset(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  }
  if (key == nullptr) return config_error(kKeyInvalid, key_file, detail);
  // Check the pair ourselves first: SSL_CTX_use_PrivateKey fails on a mismatch too, but
  // with an error that does not say which.
  X509* own = SSL_CTX_get0_certificate(ctx);
  if (own == nullptr || X509_check_private_key(own, key.get()) != 1) {
    return config_error(kKeyMismatch, key_file, detail);
  }
  if (SSL_CTX_use_PrivateKey(ctx, key.get()) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
    return config_error(kKeyMismatch, key_file, detail);
  }
  return Status::Ok();
}

Status configure(SSL_CTX* ctx, Role role, const TlsFiles& files, std::string* detail) {
  const bool server = role == Role::kServer;
  // TLS 1.3 only, both bounds (DESIGN.md: "TLS 1.3 (OpenSSL) with mutual authentication").
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1) {
    return config_error(kContextFailed, {}, detail);
  }
  no_resumption(ctx);
  COILGUN_TRY(use_own_certificate(ctx, files.cert, files.key, detail));

  // The CA the peer must chain to.
  if (SSL_CTX_load_verify_file(ctx, files.ca.c_str()) != 1) {
    return config_error(kCaInvalid, files.ca, detail);
  }

  if (server) {
    // Require a client certificate, verified against the CA (an agent refuses any edge it
    // cannot authenticate). RFC 8446 section 4.4.2.4: with no client certificate the server
    // "MAY at its discretion ... abort the handshake with a 'certificate_required' alert".
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    // Name our CA in the CertificateRequest so a client can pick the right certificate.
    if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(files.ca.c_str())) {
      SSL_CTX_set_client_CA_list(ctx, names);  // Takes ownership.
    }
    SSL_CTX_set_num_tickets(ctx, 0);
    if (SSL_CTX_set_session_id_context(ctx, kSessionIdContext, sizeof(kSessionIdContext)) != 1) {
      return config_error(kContextFailed, {}, detail);
    }
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    // Returns 0 on success (unlike most of OpenSSL).
    if (SSL_CTX_set_alpn_protos(ctx, kAlpnWire, sizeof(kAlpnWire)) != 0) {
      return config_error(kContextFailed, {}, detail);
    }
  }
  return Status::Ok();
}

// Maps a failed certificate verification (X509_V_ERR_*) to a session error.
Status classify_verify(long verify_result) {
  switch (verify_result) {
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
      return kNameMismatch;
    case X509_V_ERR_CERT_HAS_EXPIRED:
      return kPeerCertExpired;
    case X509_V_ERR_CERT_NOT_YET_VALID:
      return kPeerCertNotYetValid;
    case X509_V_ERR_INVALID_PURPOSE:
      return kPeerCertWrongUse;
    default:
      return kNotTrusted;
  }
}

// Maps a fatal alert the peer sent (RFC 8446 section 6.2) to a session error.
Status classify_alert(int alert) {
  switch (alert) {
    case SSL_AD_BAD_CERTIFICATE:
    case SSL_AD_UNSUPPORTED_CERTIFICATE:
    case SSL_AD_CERTIFICATE_REVOKED:
    case SSL_AD_CERTIFICATE_EXPIRED:
    case SSL_AD_CERTIFICATE_UNKNOWN:
    case SSL_AD_UNKNOWN_CA:
    case SSL_AD_ACCESS_DENIED:
      return kPeerRejectedCert;
    case SSL_AD_CERTIFICATE_REQUIRED:
      return kPeerRequiresCert;
    case SSL_AD_NO_APPLICATION_PROTOCOL:
      return kPeerRefusedAlpn;
    case SSL_AD_PROTOCOL_VERSION:
      return kNoSharedVersion;
    case SSL_AD_HANDSHAKE_FAILURE:
      return kPeerHandshakeFailure;
    default:
      return kPeerAlert;
  }
}

// Maps OpenSSL's verdict on a failed SSL_* call to a session error. |reason_error| is the
// packed error from the queue (0 if none), |verify_result| the certificate verification
// result, |alpn_refused| whether one of our ALPN callbacks refused the peer.
Status classify(int ssl_error, unsigned long reason_error, long verify_result, bool alpn_refused) {
  if (ssl_error == SSL_ERROR_ZERO_RETURN) return kPeerClosed;
  if (alpn_refused) return kNoAlpn;
  if (reason_error == 0 || ERR_GET_LIB(reason_error) != ERR_LIB_SSL) return kTlsError;
  const int reason = ERR_GET_REASON(reason_error);
  if (reason >= SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256) {
    return classify_alert(reason - SSL_AD_REASON_OFFSET);
  }
  switch (reason) {
    case SSL_R_CERTIFICATE_VERIFY_FAILED:
      return classify_verify(verify_result);
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
      return kNoPeerCert;
    case SSL_R_NO_APPLICATION_PROTOCOL:
      return kNoAlpn;
    case SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC:
      return kBadRecordMac;
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_NO_PROTOCOLS_AVAILABLE:
      return kNoSharedVersion;
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST:
      return kPlainHttp;
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
    case SSL_R_ENCRYPTED_LENGTH_TOO_LONG:
    case SSL_R_RECORD_LENGTH_MISMATCH:
    case SSL_R_DATA_LENGTH_TOO_LONG:
      return kMalformedRecord;
    default:
      return kTlsError;
  }
}

// True if |name| is an IPv4 or IPv6 literal.
bool is_ip_literal(const std::string& name) {
  unsigned char buf[16];
  return inet_pton(AF_INET, name.c_str(), buf) == 1 || inet_pton(AF_INET6, name.c_str(), buf) == 1;
}

// Bytes a memory BIO has allocated (its capacity, not what it holds).
// The DNS and IP subjectAltNames of |cert|, printable, for a name-mismatch log line.
std::string san_list(X509* cert) {
  if (cert == nullptr) return "(none)";
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (names == nullptr) return "(no subjectAltName)";
  std::string out;
  for (int i = 0; i < sk_GENERAL_NAME_num(names) && out.size() < 256; ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
    std::string one;
    if (n->type == GEN_DNS) {
      const ASN1_STRING* v = n->d.dNSName;
      one.assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(v)),
                 static_cast<size_t>(ASN1_STRING_length(v)));
      for (char& c : one) {
        if (c < '!' || c > '~') c = '?';
      }
    } else if (n->type == GEN_IPADD) {
      const ASN1_OCTET_STRING* v = n->d.iPAddress;
      char text[INET6_ADDRSTRLEN] = "?";
      const int len = ASN1_STRING_length(v);
      if (len == 4 || len == 16) {
        inet_ntop(len == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(v), text, sizeof text);
      }
      one = text;
    } else {
      continue;
    }
    if (!out.empty()) out += ' ';
    out += one;
  }
  GENERAL_NAMES_free(names);
  return out.empty() ? "(no DNS or IP names)" : out;
}

size_t bio_allocated(BIO* bio) {
  BUF_MEM* mem = nullptr;
  if (BIO_get_mem_ptr(bio, &mem) != 1 || mem == nullptr) return 0;
  return mem->max;
}

}  // namespace

// ---- TlsContext ----

TlsContext::TlsContext(Passkey, Role role, SSL_CTX* ctx, int64_t not_before_unix,
                       int64_t not_after_unix, std::string subject)
    : role_(role),
      ctx_(ctx),
      not_before_unix_(not_before_unix),
      not_after_unix_(not_after_unix),
      subject_(std::move(subject)) {}

Result<std::shared_ptr<const TlsContext>> TlsContext::web_client(const std::string& ca,
                                                                 std::string* detail,
                                                                 const std::string& cert,
                                                                 const std::string& key) {
  if (!ca.empty()) COILGUN_TRY(check_readable(ca, kCaUnset, kCaUnreadable, detail));
  if (!cert.empty()) {
    COILGUN_TRY(check_readable(cert, kCertUnset, kCertUnreadable, detail));
    COILGUN_TRY(check_readable(key, kKeyUnset, kKeyUnreadable, detail));
  }
  ERR_clear_error();
  SslCtxPtr ctx{SSL_CTX_new(TLS_client_method())};
  if (ctx == nullptr) return config_error(kContextFailed, {}, detail);
  // Mozilla's "intermediate" profile: TLS 1.2 and 1.3; for 1.2 only forward-secret AEAD suites
  // (1.3's are all of that kind: OpenSSL's defaults).
  if (SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION) != 1 ||
      SSL_CTX_set_cipher_list(ctx.get(), kIntermediateTls12Ciphers) != 1) {
    return config_error(kContextFailed, {}, detail);
  }
  no_resumption(ctx.get());
  if (!cert.empty()) COILGUN_TRY(use_own_certificate(ctx.get(), cert, key, detail));
  SSL_CTX_set_options(ctx.get(), SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  SSL_CTX_set_cert_verify_callback(ctx.get(), TlsSession::on_verify_web, nullptr);
  const int loaded = ca.empty() ? SSL_CTX_set_default_verify_paths(ctx.get())
                                : SSL_CTX_load_verify_file(ctx.get(), ca.c_str());
  if (loaded != 1) return config_error(kCaInvalid, ca, detail);
  static constexpr unsigned char kHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  if (SSL_CTX_set_alpn_protos(ctx.get(), kHttp11, sizeof(kHttp11)) != 0) {
    return config_error(kContextFailed, {}, detail);
  }
  ERR_clear_error();
  auto made = std::make_shared<TlsContext>(Passkey{}, Role::kClient, ctx.release(), 0, 0, "");
  made->tunnel_ = false;
  return std::shared_ptr<const TlsContext>(std::move(made));
}

Result<std::shared_ptr<const TlsContext>> TlsContext::build(Role role, const TlsFiles& files,
                                                            std::string* detail) {
  COILGUN_TRY(check_readable(files.ca, kCaUnset, kCaUnreadable, detail));
  COILGUN_TRY(check_readable(files.cert, kCertUnset, kCertUnreadable, detail));
  COILGUN_TRY(check_readable(files.key, kKeyUnset, kKeyUnreadable, detail));
  ERR_clear_error();
  SslCtxPtr ctx{SSL_CTX_new(role == Role::kServer ? TLS_server_method() : TLS_client_method())};
  if (ctx == nullptr) return config_error(kContextFailed, {}, detail);
  COILGUN_TRY(configure(ctx.get(), role, files, detail));
  if (role == Role::kServer) {
    SSL_CTX_set_client_hello_cb(ctx.get(), TlsSession::on_client_hello, nullptr);
    SSL_CTX_set_alpn_select_cb(ctx.get(), TlsSession::on_alpn_select, nullptr);
  } else {
    SSL_CTX_set_cert_verify_callback(ctx.get(), TlsSession::on_verify_server, nullptr);
  }
  X509* own = SSL_CTX_get0_certificate(ctx.get());
  const int64_t not_before = asn1_time_to_unix(X509_get0_notBefore(own));
  const int64_t not_after = asn1_time_to_unix(X509_get0_notAfter(own));
  std::string subject = name_to_string(X509_get_subject_name(own));
  ERR_clear_error();
  return std::shared_ptr<const TlsContext>(std::make_shared<TlsContext>(
      Passkey{}, role, ctx.release(), not_before, not_after, std::move(subject)));
}

Result<std::shared_ptr<const TlsContext>> TlsContext::server(const TlsFiles& files,
                                                             std::string* detail) {
  return build(Role::kServer, files, detail);
}

Result<std::shared_ptr<const TlsContext>> TlsContext::client(const TlsFiles& files,
                                                             std::string* detail) {
  return build(Role::kClient, files, detail);
}

Status check_files(const TlsFiles& files, Role role, int64_t now_unix, std::string* detail) {
  auto ctx =
      role == Role::kServer ? TlsContext::server(files, detail) : TlsContext::client(files, detail);
  if (!ctx.ok()) return ctx.status();
  return check_validity(**ctx, files.cert, now_unix, detail);
}

Status check_validity(const TlsContext& ctx, const std::string& cert_file, int64_t now_unix,
                      std::string* detail) {
  const bool expired = ctx.not_after_unix() < now_unix;
  if (!expired && ctx.not_before_unix() <= now_unix) return Status::Ok();
  const char* what = expired ? kCertExpired : kCertNotYetValid;
  if (detail != nullptr) {
    *detail = what;
    *detail += ": ";
    *detail += cert_file;
    *detail += expired ? " (notAfter " : " (notBefore ";
    *detail += format_unix(expired ? ctx.not_after_unix() : ctx.not_before_unix());
    *detail += ")";
  }
  return Status(Code::kConfig, what);
}

// ---- TlsSession: OpenSSL callbacks ----

// Server, ClientHello received. The ALPN select callback only runs when the client sent the
// extension at all, so a client that sent none is refused here, with the alert RFC 7301
// prescribes.
int TlsSession::on_client_hello(SSL* ssl, int* alert, void* /*arg*/) {
  const unsigned char* ext = nullptr;
  size_t ext_len = 0;
  if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &ext,
                                &ext_len) == 1) {
    return SSL_CLIENT_HELLO_SUCCESS;
  }
  if (auto* self = static_cast<TlsSession*>(SSL_get_ex_data(ssl, 0))) self->alpn_refused_ = true;
  *alert = SSL_AD_NO_APPLICATION_PROTOCOL;
  return SSL_CLIENT_HELLO_ERROR;
}

// Server, choosing the protocol from the client's list. RFC 7301 section 3.2: "In the event
// that the server supports no protocols that the client advertises, then the server SHALL
// respond with a fatal 'no_application_protocol' alert." (OpenSSL sends that alert for
// SSL_TLSEXT_ERR_ALERT_FATAL.) The list is walked by hand: it is peer input, so every length
// is checked against what remains.
int TlsSession::on_alpn_select(SSL* ssl, const unsigned char** out, unsigned char* out_len,
                               const unsigned char* in, unsigned int in_len, void* /*arg*/) {
  unsigned int i = 0;
  while (i < in_len) {
    const unsigned int n = in[i];
    if (n == 0 || n > in_len - i - 1) break;
    if (n == kAlpn.size() && std::memcmp(in + i + 1, kAlpn.data(), n) == 0) {
      *out = in + i + 1;
      *out_len = static_cast<unsigned char>(n);
      return SSL_TLSEXT_ERR_OK;
    }
    i += 1 + n;
  }
  if (auto* self = static_cast<TlsSession*>(SSL_get_ex_data(ssl, 0))) {
    self->alpn_refused_ = true;
    // Kept for the log: an edge of another release offers another tunnel protocol version.
    for (unsigned int j = 0; j < in_len && self->alpn_offered_.size() < 64; ++j) {
      const char c = static_cast<char>(in[j]);
      self->alpn_offered_ += c >= '!' && c <= '~' ? c : ' ';
    }
  }
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

// Client, server's certificate chain received. In TLS 1.3 the server's ALPN choice arrives in
// EncryptedExtensions, before its Certificate, so it is known here: refuse a server that did
// not select kAlpn before we ever send our Finished, then verify the chain as usual.
int TlsSession::on_verify_server(X509_STORE_CTX* store, void* /*arg*/) {
  auto* ssl =
      static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  const unsigned char* proto = nullptr;
  unsigned int proto_len = 0;
  if (ssl != nullptr) SSL_get0_alpn_selected(ssl, &proto, &proto_len);
  const std::string_view selected =
      proto == nullptr ? std::string_view()
                       : std::string_view(reinterpret_cast<const char*>(proto), proto_len);
  if (selected != kAlpn) {
    if (ssl != nullptr) {
      if (auto* self = static_cast<TlsSession*>(SSL_get_ex_data(ssl, 0))) {
        self->alpn_refused_ = true;
      }
    }
    X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;
  }
  return on_verify_web(store, nullptr);
}

int TlsSession::on_verify_web(X509_STORE_CTX* store, void* /*arg*/) {
  auto* ssl =
      static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  const int ok = X509_verify_cert(store);
  const int err = X509_STORE_CTX_get_error(store);
  if (ok != 1 && ssl != nullptr &&
      (err == X509_V_ERR_HOSTNAME_MISMATCH || err == X509_V_ERR_IP_ADDRESS_MISMATCH)) {
    // For the log (issue #14): the names the certificate does carry.
    if (auto* self = static_cast<TlsSession*>(SSL_get_ex_data(ssl, 0))) {
      self->peer_names_ = san_list(X509_STORE_CTX_get0_cert(store));
    }
  }
  return ok;
}

// ---- TlsSession ----

TlsSession::TlsSession(Passkey, std::shared_ptr<const TlsContext> ctx, SSL* ssl)
    : ctx_(std::move(ctx)), ssl_(ssl) {
  rbio_ = SSL_get_rbio(ssl);
  wbio_ = SSL_get_wbio(ssl);
  // Ex-data slot 0 is the app-data slot (SSL_set_app_data); the callbacks read it back.
  SSL_set_ex_data(ssl, 0, this);
}

TlsSession::~TlsSession() = default;

namespace {

// Creates the SSL object with its two memory BIOs; the SSL owns the BIOs.
SSL* new_ssl(const std::shared_ptr<const TlsContext>& ctx, SSL_CTX* native) {
  if (ctx == nullptr) return nullptr;
  ERR_clear_error();
  std::unique_ptr<SSL, CDeleter<SSL_free>> ssl{SSL_new(native)};
  BioPtr rbio{BIO_new(BIO_s_mem())};
  BioPtr wbio{BIO_new(BIO_s_mem())};
  if (ssl == nullptr || rbio == nullptr || wbio == nullptr) {
    ERR_clear_error();
    return nullptr;
  }
  SSL_set_bio(ssl.get(), rbio.release(), wbio.release());
  return ssl.release();
}

constexpr Status kWrongRole{Code::kInternal, "TLS context has the wrong role for this session"};
constexpr Status kNoSession{Code::kInternal, "cannot allocate a TLS session"};
constexpr Status kBadPeerName{Code::kConfig, "TLS peer name is empty or invalid"};

}  // namespace

Result<std::unique_ptr<TlsSession>> TlsSession::server(std::shared_ptr<const TlsContext> ctx) {
  if (ctx == nullptr || ctx->role() != Role::kServer) return kWrongRole;
  SSL* ssl = new_ssl(ctx, ctx->ctx_.get());
  if (ssl == nullptr) return kNoSession;
  auto session = std::make_unique<TlsSession>(Passkey{}, std::move(ctx), ssl);
  SSL_set_accept_state(ssl);
  return session;
}

Result<std::unique_ptr<TlsSession>> TlsSession::client(std::shared_ptr<const TlsContext> ctx,
                                                       std::string_view peer_name) {
  if (ctx == nullptr || ctx->role() != Role::kClient) return kWrongRole;
  if (peer_name.empty() || peer_name.find('\0') != std::string_view::npos) return kBadPeerName;
  SSL* ssl = new_ssl(ctx, ctx->ctx_.get());
  if (ssl == nullptr) return kNoSession;
  auto session = std::make_unique<TlsSession>(Passkey{}, std::move(ctx), ssl);
  const std::string name(peer_name);
  session->expected_name_ = name;
  ERR_clear_error();
  if (is_ip_literal(name)) {
    // An address: match IP SANs only. No SNI (RFC 6066 section 3: "Literal IPv4 and IPv6
    // addresses are not permitted in 'HostName'").
    if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name.c_str()) != 1) {
      ERR_clear_error();
      return kBadPeerName;
    }
  } else {
    SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    // SSL_set_tlsext_host_name(), spelled out: the macro casts in C style.
    if (SSL_set1_host(ssl, name.c_str()) != 1 ||
        SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                 const_cast<char*>(name.c_str())) != 1) {
      ERR_clear_error();
      return kBadPeerName;
    }
  }
  SSL_set_connect_state(ssl);
  // Queue the ClientHello now so the owner can send it as soon as the socket connects.
  COILGUN_TRY(session->drive_handshake());
  return session;
}

Status TlsSession::feed(std::span<const uint8_t> ciphertext) {
  if (!failed_.ok()) return failed_;
  while (!ciphertext.empty()) {
    size_t written = 0;
    ERR_clear_error();
    // A memory BIO grows to take everything (at most INT_MAX bytes per call).
    if (BIO_write_ex(rbio_, ciphertext.data(), ciphertext.size(), &written) != 1 || written == 0) {
      ERR_clear_error();
      return fail_with(Status(Code::kInternal, "cannot buffer TLS input", Side::kTunnel));
    }
    ciphertext = ciphertext.subspan(written);
  }
  if (!handshake_done_) return drive_handshake();
  return Status::Ok();
}

bool TlsSession::peer_closed() const {
  return (SSL_get_shutdown(ssl_.get()) & SSL_RECEIVED_SHUTDOWN) != 0;
}

Status TlsSession::drive_handshake() {
  ERR_clear_error();
  const int rc = SSL_do_handshake(ssl_.get());
  if (rc != 1) {
    const int err = SSL_get_error(ssl_.get(), rc);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return Status::Ok();
    return fail(err);
  }
  // The callbacks already enforce ALPN on both sides; check the outcome once more, since a
  // session without it must never carry tunnel frames.
  const unsigned char* proto = nullptr;
  unsigned int proto_len = 0;
  SSL_get0_alpn_selected(ssl_.get(), &proto, &proto_len);
  if (ctx_->tunnel_ && (proto == nullptr || std::string_view(reinterpret_cast<const char*>(proto),
                                                             proto_len) != kAlpn)) {
    return fail_with(kNoAlpn);
  }
  handshake_done_ = true;
  if (!held_plaintext_.empty()) {
    const std::vector<uint8_t> held = std::exchange(held_plaintext_, {});
    return encrypt(held);
  }
  return Status::Ok();
}

Result<size_t> TlsSession::read(std::span<uint8_t> out) {
  if (!failed_.ok()) return failed_;
  if (!handshake_done_ || out.empty()) return size_t{0};
  size_t n = 0;
  ERR_clear_error();
  const int rc = SSL_read_ex(ssl_.get(), out.data(), out.size(), &n);
  if (rc == 1) return n;
  const int err = SSL_get_error(ssl_.get(), rc);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
    maybe_shrink_buffers();
    return size_t{0};
  }
  return fail(err);
}

Status TlsSession::write(std::span<const uint8_t> plaintext) {
  if (!failed_.ok()) return failed_;
  if (close_sent_) return kClosedLocally;
  if (plaintext.empty()) return Status::Ok();
  if (!handshake_done_) {
    held_plaintext_.insert(held_plaintext_.end(), plaintext.begin(), plaintext.end());
    return Status::Ok();
  }
  return encrypt(plaintext);
}

Status TlsSession::encrypt(std::span<const uint8_t> plaintext) {
  while (!plaintext.empty()) {
    size_t n = 0;
    ERR_clear_error();
    // OpenSSL splits this into records of at most 16 KiB (RFC 8446 section 5.1) and, writing
    // into a memory BIO, never stops half way.
    const int rc = SSL_write_ex(ssl_.get(), plaintext.data(), plaintext.size(), &n);
    if (rc != 1) return fail(SSL_get_error(ssl_.get(), rc));
    plaintext = plaintext.subspan(n);
  }
  return Status::Ok();
}

bool TlsSession::take_output(std::vector<uint8_t>& out) {
  const size_t pending = BIO_ctrl_pending(wbio_);
  if (pending == 0) return false;
  const size_t old_size = out.size();
  out.resize(old_size + pending);
  size_t got = 0;
  ERR_clear_error();
  if (BIO_read_ex(wbio_, out.data() + old_size, pending, &got) != 1) {
    ERR_clear_error();
    got = 0;
  }
  out.resize(old_size + got);
  maybe_shrink_buffers();
  return got > 0;
}

Status TlsSession::close() {
  if (close_sent_) return Status::Ok();
  close_sent_ = true;
  held_plaintext_ = {};
  if (!handshake_done_) {
    // Nothing to close cleanly; make the session terminal so nothing more is accepted.
    if (failed_.ok()) failed_ = kClosedLocally;
    return Status::Ok();
  }
  // After a fatal error OpenSSL must not send close_notify; the owner closes the socket. After
  // the peer's close_notify (failed_ is kPeerClosed) we still answer with ours.
  if (!failed_.ok() && failed_.code() != Code::kClosed) return Status::Ok();
  ERR_clear_error();
  // RFC 8446 section 6.1: "Each party MUST send a 'close_notify' alert before closing its write
  // side of the connection". Returns 0 (sent, peer's not seen yet) or 1 (both seen).
  const int rc = SSL_shutdown(ssl_.get());
  if (rc < 0) {
    const int err = SSL_get_error(ssl_.get(), rc);
    if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) return fail(err);
  }
  return Status::Ok();
}

std::string_view TlsSession::alpn() const {
  if (!handshake_done_) return {};
  const unsigned char* proto = nullptr;
  unsigned int proto_len = 0;
  SSL_get0_alpn_selected(ssl_.get(), &proto, &proto_len);
  if (proto == nullptr) return {};
  return std::string_view(reinterpret_cast<const char*>(proto), proto_len);
}

std::string TlsSession::peer_subject() const {
  X509* peer = SSL_get0_peer_certificate(ssl_.get());
  if (peer == nullptr) return {};
  return name_to_string(X509_get_subject_name(peer));
}

size_t TlsSession::pending_input_bytes() const { return BIO_ctrl_pending(rbio_); }

size_t TlsSession::pending_output_bytes() const {
  return held_plaintext_.size() + BIO_ctrl_pending(wbio_);
}

std::string TlsSession::error_detail() const {
  if (failed_.ok()) return {};
  std::string detail = failed_.message();
  if (error_code_ != 0) {
    char buf[256];
    ERR_error_string_n(error_code_, buf, sizeof(buf));
    detail += " [";
    detail += buf;
    detail += "]";
  }
  if (verify_result_ != X509_V_OK) {
    detail += "; certificate: ";
    detail += X509_verify_cert_error_string(verify_result_);
  }
  if (!peer_names_.empty()) {
    detail += "; expected " + expected_name_ + ", the certificate carries: " + peer_names_;
  }
  if (alpn_refused_ || failed_.message() == kPeerRefusedAlpn.message()) {
    // Edges and agents of releases speaking different tunnel protocol versions refuse each
    // other here (PROTOCOL.md §1).
    detail += "; this side speaks ";
    detail += kAlpn;
    if (!alpn_offered_.empty()) detail += ", the peer offered:" + alpn_offered_;
  }
  return detail;
}

Status TlsSession::fail(int ssl_error) {
  // The root cause is the first SSL-library error in the queue (X.509 errors may precede it).
  unsigned long first = 0;
  unsigned long first_ssl = 0;
  for (unsigned long e = ERR_get_error(); e != 0; e = ERR_get_error()) {
    if (first == 0) first = e;
    if (first_ssl == 0 && ERR_GET_LIB(e) == ERR_LIB_SSL) first_ssl = e;
  }
  error_code_ = first_ssl != 0 ? first_ssl : first;
  verify_result_ = SSL_get_verify_result(ssl_.get());
  return fail_with(classify(ssl_error, error_code_, verify_result_, alpn_refused_));
}

Status TlsSession::fail_with(Status status) {
  if (failed_.ok()) failed_ = status;
  held_plaintext_ = {};
  return failed_;
}

void TlsSession::maybe_shrink_buffers() { shrink_buffers(kShrinkAboveBytes); }

void TlsSession::release_buffers() { shrink_buffers(0); }

void TlsSession::shrink_buffers(size_t above) {
  // Only after the handshake: during it OpenSSL stacks a buffering BIO on the write side.
  if (!handshake_done_) return;
  if (BIO_ctrl_pending(wbio_) == 0 && bio_allocated(wbio_) > above) {
    if (BIO* fresh = BIO_new(BIO_s_mem())) {
      SSL_set0_wbio(ssl_.get(), fresh);  // Frees the old one.
      wbio_ = fresh;
    }
  }
  if (BIO_ctrl_pending(rbio_) == 0 && bio_allocated(rbio_) > above) {
    if (BIO* fresh = BIO_new(BIO_s_mem())) {
      SSL_set0_rbio(ssl_.get(), fresh);  // Frees the old one.
      rbio_ = fresh;
    }
  }
  ERR_clear_error();
}

}  // namespace coilgun::tls
