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
#include <cstdint>
#include <optional>
#include <system_error>
#include <utility>

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
  if (listen_fd_ < 0 ||
      ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
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

void TcpProxy::delay(std::chrono::milliseconds d, Direction which) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    delay_down_ = d;
    delay_up_ = which == Direction::kBoth ? d : std::chrono::milliseconds(0);
  }
  wake();
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

bool TcpProxy::deliver_due(Pair& p, Clock::time_point now) {
  for (auto [queue, to] :
       {std::pair{&p.up, p.server}, std::pair{&p.down, p.client}}) {
    while (!queue->empty() && queue->front().due <= now) {
      if (queue->front().bytes.empty()) return false;  // the sender's close
      if (!write_all(to, queue->front().bytes.data(),
                     queue->front().bytes.size())) {
        return false;
      }
      queue->pop_front();
    }
  }
  return true;
}

void TcpProxy::run() {
  char buf[16384];
  for (;;) {
    std::vector<pollfd> fds = {{wake_[0], POLLIN, 0}, {listen_fd_, POLLIN, 0}};
    int timeout_ms = -1;
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (stop_) return;
      if (!frozen_) {
        std::optional<Clock::time_point> next;
        for (const Pair& p : pairs_) {
          // A side whose close is queued is not polled again (it would
          // report end-of-file at once, forever).
          if (!p.client_closed) fds.push_back({p.client, POLLIN, 0});
          if (!p.server_closed) fds.push_back({p.server, POLLIN, 0});
          for (const std::deque<Chunk>* q : {&p.up, &p.down}) {
            if (!q->empty() && (!next || q->front().due < *next))
              next = q->front().due;
          }
        }
        if (next) {
          // Held bytes fall due: the poll wakes for them (rounded up, so a
          // wake-up never comes early and spins).
          const auto left = std::chrono::ceil<std::chrono::milliseconds>(
              *next - Clock::now());
          timeout_ms = static_cast<int>(
              std::clamp<std::int64_t>(left.count(), 0, 60'000));
        }
      }
    }
    if (::poll(fds.data(), fds.size(), timeout_ms) < 0) continue;
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
        if (s >= 0 &&
            ::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
          pairs_.push_back({.client = c, .server = s});
        } else {
          ::close(c);
          if (s >= 0) ::close(s);
        }
      }
    }
    const Clock::time_point now = Clock::now();
    for (std::size_t i = 2; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      auto it = std::find_if(pairs_.begin(), pairs_.end(), [&](const Pair& p) {
        return p.client == fds[i].fd || p.server == fds[i].fd;
      });
      if (it == pairs_.end()) continue;  // closed meanwhile
      const bool from_client = it->client == fds[i].fd;
      const ssize_t n = ::recv(fds[i].fd, buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR) continue;
      std::deque<Chunk>& held = from_client ? it->up : it->down;
      const std::chrono::milliseconds d = from_client ? delay_up_ : delay_down_;
      // Behind held bytes, even with the delay ended: order is kept.
      const bool hold = d.count() > 0 || !held.empty();
      Clock::time_point due = now + d;
      if (!held.empty()) due = std::max(due, held.back().due);
      bool ok = true;
      if (n <= 0) {
        if (hold) {
          held.push_back({due, {}});
          (from_client ? it->client_closed : it->server_closed) = true;
        } else {
          ok = false;
        }
      } else if (!from_client && it->drop_replies) {
        // discarded
      } else if (hold) {
        held.push_back({due, std::string(buf, static_cast<std::size_t>(n))});
      } else {
        ok = write_all(from_client ? it->server : it->client, buf,
                       static_cast<std::size_t>(n));
      }
      if (!ok) {
        close_pair(*it);
        pairs_.erase(it);
      }
    }
    if (!frozen_) {
      for (auto it = pairs_.begin(); it != pairs_.end();) {
        if (deliver_due(*it, now)) {
          ++it;
        } else {
          close_pair(*it);
          it = pairs_.erase(it);
        }
      }
    }
  }
}

}  // namespace tierlock::testing
