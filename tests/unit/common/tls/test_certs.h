#pragma once
// TestCerts: a throwaway PKI for TLS tests, written as PEM files into a fresh temporary
// directory that the destructor removes.
//
// Header-only on purpose: tests/unit/**/*_test.cc are globbed into the unit binary, and a
// helper .cc beside them would not be compiled.
//
// What it makes (EC P-256 keys, X.509 v3, SHA-256 signatures, valid from one minute ago for
// one day unless noted):
//   ca              "Coilgun Test CA", the CA both ends trust.
//   server          signed by ca; serverAuth; SAN IP:127.0.0.1, DNS:localhost and the name
//                   given to the constructor.
//   client          signed by ca; clientAuth; CN "edge-1".
//   other_ca        "Unrelated Test CA", which nobody trusts.
//   other_client    signed by other_ca; clientAuth; CN "intruder".
//   expired_server  like server, but its validity ended an hour ago.
//
// Construction throws std::runtime_error when OpenSSL or the file system fails (test code
// only: Catch2 reports it as a failed test). Not thread-safe; one per test.

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdlib.h>  // mkdtemp

#include <cstdint>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/tls/tls.h"
#include "proto/c_deleter.h"

namespace coilgun::test {

namespace test_certs_detail {

using PKey = std::unique_ptr<EVP_PKEY, CDeleter<EVP_PKEY_free>>;
using Cert = std::unique_ptr<X509, CDeleter<X509_free>>;
using Bio = std::unique_ptr<BIO, CDeleter<BIO_free>>;

inline void check(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(std::string("TestCerts: ") + what);
}

inline PKey make_key() {
  PKey key{EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256")};
  check(key != nullptr, "EC key generation failed");
  return key;
}

inline void add_ext(X509* cert, X509V3_CTX* v3, int nid, const char* value) {
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, v3, nid, value);
  check(ext != nullptr, "bad X.509 extension");
  const int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  check(ok == 1, "cannot add X.509 extension");
}

// What a certificate says about itself.
struct Spec {
  std::string common_name{};
  bool is_ca = false;
  const char* extended_key_usage = nullptr;  // "serverAuth", "clientAuth" or null.
  std::string subject_alt_name{};            // "IP:127.0.0.1,DNS:localhost" or "".
  long not_before_offset_s = -60;
  long not_after_offset_s = 24 * 3600;
};

// Makes a certificate for |key| as |spec| says, signed by |issuer|/|issuer_key|, or
// self-signed when |issuer| is null.
inline Cert make_cert(const Spec& spec, EVP_PKEY* key, X509* issuer, EVP_PKEY* issuer_key) {
  Cert cert{X509_new()};
  check(cert != nullptr, "X509_new failed");
  X509* x = cert.get();
  check(X509_set_version(x, X509_VERSION_3) == 1, "cannot set version");
  uint64_t serial = 0;
  check(RAND_bytes(reinterpret_cast<unsigned char*>(&serial), sizeof(serial)) == 1, "RAND");
  serial = (serial >> 2) + 1;  // Positive and non-zero.
  check(ASN1_INTEGER_set_uint64(X509_get_serialNumber(x), serial) == 1, "cannot set serial");
  check(X509_gmtime_adj(X509_getm_notBefore(x), spec.not_before_offset_s) != nullptr,
        "cannot set notBefore");
  check(X509_gmtime_adj(X509_getm_notAfter(x), spec.not_after_offset_s) != nullptr,
        "cannot set notAfter");
  check(X509_set_pubkey(x, key) == 1, "cannot set public key");
  X509_NAME* name = X509_get_subject_name(x);
  check(X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                                   reinterpret_cast<const unsigned char*>("Coilgun tests"), -1, -1,
                                   0) == 1 &&
            X509_NAME_add_entry_by_txt(
                name, "CN", MBSTRING_ASC,
                reinterpret_cast<const unsigned char*>(spec.common_name.c_str()), -1, -1, 0) == 1,
        "cannot set subject");
  check(X509_set_issuer_name(x, issuer != nullptr ? X509_get_subject_name(issuer) : name) == 1,
        "cannot set issuer");

  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, issuer != nullptr ? issuer : x, x, nullptr, nullptr, 0);
  add_ext(x, &v3, NID_basic_constraints, spec.is_ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
  add_ext(x, &v3, NID_key_usage,
          spec.is_ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
  add_ext(x, &v3, NID_subject_key_identifier, "hash");
  if (issuer != nullptr) add_ext(x, &v3, NID_authority_key_identifier, "keyid:always");
  if (spec.extended_key_usage != nullptr) {
    add_ext(x, &v3, NID_ext_key_usage, spec.extended_key_usage);
  }
  if (!spec.subject_alt_name.empty()) {
    add_ext(x, &v3, NID_subject_alt_name, spec.subject_alt_name.c_str());
  }
  check(X509_sign(x, issuer_key != nullptr ? issuer_key : key, EVP_sha256()) > 0, "X509_sign");
  return cert;
}

inline void write_cert(const std::string& path, X509* cert) {
  Bio bio{BIO_new_file(path.c_str(), "w")};
  check(bio != nullptr && PEM_write_bio_X509(bio.get(), cert) == 1, "cannot write certificate");
}

inline void write_key(const std::string& path, EVP_PKEY* key) {
  Bio bio{BIO_new_file(path.c_str(), "w")};
  check(bio != nullptr &&
            PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) == 1,
        "cannot write key");
}

}  // namespace test_certs_detail

class TestCerts {
 public:
  // Generates everything listed above; |server_name| is the extra DNS SAN of the server
  // certificate.
  explicit TestCerts(const std::string& server_name = "agent.coilgun.test") {
    namespace d = test_certs_detail;
    std::string templ = (std::filesystem::temp_directory_path() / "coilgun-tls-XXXXXX").string();
    std::vector<char> buf(templ.begin(), templ.end());
    buf.push_back('\0');
    d::check(mkdtemp(buf.data()) != nullptr, "mkdtemp failed");
    dir_ = buf.data();

    const d::PKey ca_key = d::make_key();
    const d::Cert ca = d::make_cert({.common_name = "Coilgun Test CA", .is_ca = true}, ca_key.get(),
                                    nullptr, nullptr);
    const d::PKey other_ca_key = d::make_key();
    const d::Cert other_ca = d::make_cert({.common_name = "Unrelated Test CA", .is_ca = true},
                                          other_ca_key.get(), nullptr, nullptr);

    const std::string san = "IP:127.0.0.1,DNS:localhost,DNS:" + server_name;
    const d::PKey server_key = d::make_key();
    const d::Cert server = d::make_cert(
        {.common_name = server_name, .extended_key_usage = "serverAuth", .subject_alt_name = san},
        server_key.get(), ca.get(), ca_key.get());
    const d::PKey client_key = d::make_key();
    const d::Cert client =
        d::make_cert({.common_name = "edge-1", .extended_key_usage = "clientAuth"},
                     client_key.get(), ca.get(), ca_key.get());
    const d::PKey other_client_key = d::make_key();
    const d::Cert other_client =
        d::make_cert({.common_name = "intruder", .extended_key_usage = "clientAuth"},
                     other_client_key.get(), other_ca.get(), other_ca_key.get());
    const d::PKey expired_key = d::make_key();
    const d::Cert expired = d::make_cert({.common_name = server_name,
                                          .extended_key_usage = "serverAuth",
                                          .subject_alt_name = san,
                                          .not_before_offset_s = -2 * 24 * 3600,
                                          .not_after_offset_s = -3600},
                                         expired_key.get(), ca.get(), ca_key.get());

    ca_cert = path("ca.pem");
    server_cert = path("server.pem");
    server_key_file = path("server.key");
    client_cert = path("client.pem");
    client_key_file = path("client.key");
    other_ca_cert = path("other_ca.pem");
    other_client_cert = path("other_client.pem");
    other_client_key_file = path("other_client.key");
    expired_server_cert = path("expired_server.pem");
    expired_server_key_file = path("expired_server.key");
    d::write_cert(ca_cert, ca.get());
    d::write_cert(server_cert, server.get());
    d::write_key(server_key_file, server_key.get());
    d::write_cert(client_cert, client.get());
    d::write_key(client_key_file, client_key.get());
    d::write_cert(other_ca_cert, other_ca.get());
    d::write_cert(other_client_cert, other_client.get());
    d::write_key(other_client_key_file, other_client_key.get());
    d::write_cert(expired_server_cert, expired.get());
    d::write_key(expired_server_key_file, expired_key.get());
  }

  // Removes the directory and everything in it.
  ~TestCerts() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  TestCerts(const TestCerts&) = delete;
  TestCerts& operator=(const TestCerts&) = delete;

  // The temporary directory holding the files.
  const std::string& dir() const { return dir_; }
  // |name| inside dir(): for files a test writes itself.
  std::string path(const std::string& name) const { return dir_ + "/" + name; }

  // The agent: server certificate, trusting ca.
  tls::TlsFiles server_files() const { return {ca_cert, server_cert, server_key_file}; }
  // The edge: client certificate, trusting ca.
  tls::TlsFiles client_files() const { return {ca_cert, client_cert, client_key_file}; }
  // An edge whose certificate comes from other_ca (it still trusts ca, so it would accept
  // the agent).
  tls::TlsFiles other_client_files() const {
    return {ca_cert, other_client_cert, other_client_key_file};
  }
  // The agent with an expired certificate.
  tls::TlsFiles expired_server_files() const {
    return {ca_cert, expired_server_cert, expired_server_key_file};
  }

  // PEM paths, valid while this object lives.
  std::string ca_cert, server_cert, server_key_file, client_cert, client_key_file;
  std::string other_ca_cert, other_client_cert, other_client_key_file;
  std::string expired_server_cert, expired_server_key_file;

 private:
  std::string dir_;
};

}  // namespace coilgun::test
