// tests/lease/proxy.cc -- see proxy.h.
#include "lease/proxy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

namespace tierlock::testing {
namespace {

sockaddr_in loopback(int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  return a;
}

bool write_all(int fd, const char* data, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::send(fd, data, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    data += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

}  // namespace

TcpProxy::TcpProxy(int target_port) : target_port_(target_port) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a = loopback(0);
  socklen_t len = sizeof a;
  if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::listen(listen_fd_, 64) != 0 ||
      ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0 ||
      ::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) {
    throw std::system_error(errno, std::generic_category(), "TcpProxy");
  }
  port_ = ntohs(a.sin_port);
  thread_ = std::thread([this] { run(); });
}

TcpProxy::~TcpProxy() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  wake();
  thread_.join();
  for (Pair& p : pairs_) close_pair(p);
  ::close(listen_fd_);
  ::close(wake_[0]);
  ::close(wake_[1]);
}

void TcpProxy::wake() {
  const char c = 1;
  (void)!::write(wake_[1], &c, 1);
}

void TcpProxy::close_pair(Pair& p) {
  if (p.client >= 0) ::close(p.client);
  if (p.server >= 0) ::close(p.server);
  p.client = p.server = -1;
}

void TcpProxy::drop_replies_on_open_connections() {
  std::lock_guard<std::mutex> lk(mu_);
  for (Pair& p : pairs_) p.drop_replies = true;
}

void TcpProxy::freeze(bool frozen) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    frozen_ = frozen;
  }
  wake();
}

void TcpProxy::cut() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (Pair& p : pairs_) close_pair(p);
    pairs_.clear();
  }
  wake();
}

int TcpProxy::open_connections() {
  std::lock_guard<std::mutex> lk(mu_);
  return static_cast<int>(pairs_.size());
}

void TcpProxy::run() {
  char buf[16384];
  for (;;) {
    std::vector<pollfd> fds = {{wake_[0], POLLIN, 0}, {listen_fd_, POLLIN, 0}};
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (stop_) return;
      if (!frozen_) {
        for (const Pair& p : pairs_) {
          fds.push_back({p.client, POLLIN, 0});
          fds.push_back({p.server, POLLIN, 0});
        }
      }
    }
    if (::poll(fds.data(), fds.size(), -1) < 0) continue;
    if (fds[0].revents != 0) {
      while (::read(wake_[0], buf, sizeof buf) > 0) {
      }
      continue;  // state changed: rebuild the set
    }
    std::lock_guard<std::mutex> lk(mu_);
    if (fds[1].revents != 0) {
      const int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c >= 0) {
        const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a = loopback(target_port_);
        if (s >= 0 && ::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
          pairs_.push_back({c, s, false});
        } else {
          ::close(c);
          if (s >= 0) ::close(s);
        }
      }
    }
    for (std::size_t i = 2; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      auto it = std::find_if(pairs_.begin(), pairs_.end(), [&](const Pair& p) {
        return p.client == fds[i].fd || p.server == fds[i].fd;
      });
      if (it == pairs_.end()) continue;  // closed meanwhile
      const bool from_client = it->client == fds[i].fd;
      const ssize_t n = ::recv(fds[i].fd, buf, sizeof buf, 0);
      bool ok = n > 0;
      if (ok && (from_client || !it->drop_replies)) {
        ok = write_all(from_client ? it->server : it->client, buf,
                       static_cast<std::size_t>(n));
      }
      if (!ok && !(n < 0 && errno == EINTR)) {
        close_pair(*it);
        pairs_.erase(it);
      }
    }
  }
}

}  // namespace tierlock::testing
