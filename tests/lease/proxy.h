// tests/lease/proxy.h
//
// A loopback TCP proxy for network faults in the lease tests (client ->
// proxy -> server, all on 127.0.0.1):
//   TcpProxy - forwards; can drop replies on the connections open now, freeze
//              (stop forwarding, connections stay open), or cut (close every
//              connection).
#ifndef TIERLOCK_TESTS_LEASE_PROXY_H_
#define TIERLOCK_TESTS_LEASE_PROXY_H_

#include <mutex>
#include <thread>
#include <vector>

namespace tierlock::testing {

class TcpProxy {
 public:
  // Listens on a free loopback port, forwarding to 127.0.0.1:target_port.
  // Throws std::system_error if it cannot listen.
  explicit TcpProxy(int target_port);
  ~TcpProxy();
  TcpProxy(const TcpProxy&) = delete;
  TcpProxy& operator=(const TcpProxy&) = delete;

  int port() const { return port_; }
  // Discards what the server sends on the connections open now (the
  // requests still reach it: replies are lost). New connections are normal.
  void drop_replies_on_open_connections();
  // Stops forwarding anything, on open and new connections, until unfrozen.
  void freeze(bool frozen);
  // Closes every open connection, both sides.
  void cut();
  // Returns how many connections are open.
  int open_connections();

 private:
  struct Pair {
    int client = -1;
    int server = -1;
    bool drop_replies = false;
  };
  void run();
  void wake();
  void close_pair(Pair& p);

  int target_port_;
  int port_ = 0;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};
  std::mutex mu_;
  std::vector<Pair> pairs_;
  bool frozen_ = false;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace tierlock::testing

#endif  // TIERLOCK_TESTS_LEASE_PROXY_H_
