#pragma once
// A real memcached (Debian's /usr/bin/memcached) on an ephemeral loopback port, for the shared
// tier's tests. Started in the constructor, killed (SIGKILL) in the destructor or by kill().
//
// memcached cannot be told to pick a port and report it, so a free port is found by binding
// port 0 and closing it; if memcached then fails to listen (another process took the port in
// between) the next port is tried, up to five times. It dies with the test process.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common/store/version_store.h"

namespace coilgun::test {

class MemcachedServer {
 public:
  // |extra|: more memcached arguments (e.g. {"-I", "2m"}). |sasl_conf|: a directory holding a
  // memcached.conf for Cyrus SASL (SASL_CONF_PATH), for a server started with -S.
  explicit MemcachedServer(std::vector<std::string> extra = {}, std::string sasl_conf = "")
      : extra_(std::move(extra)), sasl_conf_(std::move(sasl_conf)) {
    for (int attempt = 0; attempt < 5; ++attempt) {
      port_ = free_port();
      if (start()) return;
    }
    throw std::runtime_error("memcached did not start (is the memcached package installed?)");
  }
  ~MemcachedServer() { kill(); }
  MemcachedServer(const MemcachedServer&) = delete;
  MemcachedServer& operator=(const MemcachedServer&) = delete;

  uint16_t port() const { return port_; }
  coilgun::MemcachedServer address() const { return {"127.0.0.1", port_}; }

  // Kills it now (a server that goes away under load).
  void kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }

 private:
  static uint16_t free_port() {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      if (fd >= 0) close(fd);
      throw std::runtime_error("no free port");
    }
    close(fd);
    return ntohs(a.sin_port);
  }

  static bool accepts(uint16_t port) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    const bool ok = fd >= 0 && connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
    if (fd >= 0) close(fd);
    return ok;
  }

  bool start() {
    std::vector<std::string> args{"memcached", "-l", "127.0.0.1", "-p", std::to_string(port_),
                                  "-U",        "0",  "-m",        "64", "-t",
                                  "1"};
    if (geteuid() == 0) args.insert(args.end(), {"-u", "nobody"});  // It refuses root.
    args.insert(args.end(), extra_.begin(), extra_.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = fork();
    if (pid_ < 0) return false;
    if (pid_ == 0) {
      // Dies with the test (even one killed by a timeout), and keeps off its output pipes.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      const int null = open("/dev/null", O_RDWR);
      dup2(null, STDIN_FILENO);
      dup2(null, STDOUT_FILENO);
      dup2(null, STDERR_FILENO);
      if (!sasl_conf_.empty()) setenv("SASL_CONF_PATH", sasl_conf_.c_str(), 1);
      execv("/usr/bin/memcached", argv.data());
      _exit(127);
    }
    // Up to 5 s for it to listen (bounded; it takes a few ms).
    for (int i = 0; i < 500; ++i) {
      if (accepts(port_)) return true;
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {  // It exited: the port was taken.
        pid_ = -1;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    kill();
    return false;
  }

  std::vector<std::string> extra_;
  std::string sasl_conf_;
  uint16_t port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace coilgun::test
