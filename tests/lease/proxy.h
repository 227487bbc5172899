// tests/lease/proxy.h
//
// A loopback TCP proxy for network faults in the lease tests (client ->
// proxy -> server, all on 127.0.0.1):
//   TcpProxy - forwards; can drop replies on the connections open now, freeze
//              (stop forwarding, connections stay open), cut (close every
//              connection), or delay (hold each byte for a set time, then
//              deliver it in order).
#ifndef TIERLOCK_TESTS_LEASE_PROXY_H_
#define TIERLOCK_TESTS_LEASE_PROXY_H_

#include <chrono>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace tierlock::testing {

class TcpProxy {
 public:
  // Which traffic delay() holds back.
  enum class Direction { kBoth, kRepliesOnly };

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
  // Holds every byte read from now on (server -> client only, or both ways)
  // for `d`, then delivers it in order, on open and new connections; zero
  // ends the delay for new bytes (those already held keep their time). A
  // side's close is delayed like its bytes: what it sent first still arrives,
  // then both sides are closed. Delivery is driven by the proxy's poll
  // timeout (no sleep in the data path).
  void delay(std::chrono::milliseconds d, Direction which = Direction::kBoth);
  // Returns how many connections are open.
  int open_connections();

 private:
  using Clock = std::chrono::steady_clock;
  struct Chunk {
    Clock::time_point due;
    std::string bytes;  // empty: the sender closed
  };
  struct Pair {
    int client = -1;
    int server = -1;
    bool drop_replies = false;
    bool client_closed = false,
         server_closed = false;  // close queued, fd unpolled
    std::deque<Chunk> up, down;  // held: client -> server, server -> client
  };
  void run();
  void wake();
  void close_pair(Pair& p);
  // Delivers every held chunk that is due; false if the pair must close.
  bool deliver_due(Pair& p, Clock::time_point now);

  int target_port_;
  int port_ = 0;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};
  std::mutex mu_;
  std::vector<Pair> pairs_;
  bool frozen_ = false;
  bool stop_ = false;
  std::chrono::milliseconds delay_up_{0}, delay_down_{0};
  std::thread thread_;
};

}  // namespace tierlock::testing

#endif  // TIERLOCK_TESTS_LEASE_PROXY_H_
