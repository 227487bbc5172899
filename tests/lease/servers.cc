// tests/lease/servers.cc -- see servers.h.
#include "lease/servers.h"

#include <arpa/inet.h>
#include <glob.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <sstream>
#include <string_view>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "support/subprocess.h"
#include "support/wait.h"
#include "tierlock/dir_lock.h"

namespace tierlock::testing {

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  ::close(fd);
  return port;
}

std::string sh_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

namespace {

absl::Status sh(const std::string& cmd, std::string* out = nullptr) {
  RunResult r = run({"/bin/sh", "-c", cmd + " 2>&1"}, std::chrono::seconds(60));
  if (out != nullptr) *out = r.out;
  if (r.status.code != 0) {
    return absl::InternalError(absl::StrCat("`", cmd, "` failed (",
                                            r.status.describe(), "): ", r.out));
  }
  return absl::OkStatus();
}

std::string postgres_bin() {
  glob_t g{};
  std::string bin;
  if (::glob("/usr/lib/postgresql/*/bin/initdb", 0, nullptr, &g) == 0 &&
      g.gl_pathc > 0) {
    bin = g.gl_pathv[g.gl_pathc - 1];
    bin.resize(bin.size() - std::string("/initdb").size());
  }
  ::globfree(&g);
  return bin;
}

constexpr char kAsPostgres[] =
    "setpriv --reuid=postgres --regid=postgres --init-groups ";

// Makes `dir` the `postgres` user's: PostgreSQL and pgbouncer refuse to run
// as root and run as that user (kAsPostgres).
absl::Status give_to_postgres(const std::filesystem::path& dir) {
  const passwd* pw = ::getpwnam("postgres");
  if (pw == nullptr) return absl::NotFoundError("no `postgres` user");
  if (::chown(dir.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("chown '", dir.string(), "' to postgres (run as root)"));
  }
  return absl::OkStatus();
}

// SIGKILLs a daemon (its parent is init) and waits until it is gone or a
// zombie init has yet to reap (its ports are closed by then).
absl::Status kill_daemon(int pid, const char* what) {
  ::kill(pid, SIGKILL);
  auto dead = [pid] {
    if (::kill(pid, 0) != 0) return true;
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string text((std::istreambuf_iterator<char>(stat)), {});
    const std::size_t paren = text.rfind(')');
    return paren != std::string::npos && paren + 2 < text.size() &&
           text[paren + 2] == 'Z';
  };
  if (!wait_until(dead, std::chrono::seconds(30))) {
    return absl::InternalError(
        absl::StrCat(what, " (pid ", pid, ") did not die"));
  }
  return absl::OkStatus();
}

// Waits (at most 30 s) until `pid_file` names the daemon (stored in *pid as
// soon as it does, so a caller can kill it) and the shell command `probe`
// succeeds printing `expect`.
// Waits until the daemon whose pid `pid_file` names answers `probe` with
// output containing expect(pid). Fails at once if that process exits: a
// daemon that could not bind its port (another test process took the free
// port first) must not be mistaken for the one that answers there.
bool daemon_ready(const std::string& pid_file, int* pid,
                  const std::string& probe,
                  const std::function<std::string(int)>& expect) {
  bool died = false;
  const bool up = wait_until(
      [&] {
        std::ifstream in(pid_file);
        int p = -1;
        if (!(in >> p)) return false;
        *pid = p;
        if (::kill(p, 0) != 0) {
          died = true;
          return true;
        }
        std::string out;
        const bool answered =
            sh(probe, &out).ok() && out.find(expect(p)) != std::string::npos;
        if (answered && ::kill(p, 0) != 0) {
          died = true;
          return true;
        }
        return answered;
      },
      std::chrono::seconds(30));
  return up && !died;
}

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

// ------------------------------------------------------------ PostgresServer

absl::StatusOr<std::unique_ptr<PostgresServer>> PostgresServer::start() {
  std::unique_ptr<PostgresServer> s(new PostgresServer);
  s->bin_ = postgres_bin();
  if (s->bin_.empty()) {
    return absl::NotFoundError(
        "PostgreSQL server not installed (/usr/lib/postgresql/*/bin/initdb); "
        "run scripts/deps.sh (Debian: postgresql)");
  }
  if (absl::Status st = give_to_postgres(s->dir_.path()); !st.ok()) return st;
  const std::string dir = s->dir_.path().string();
  if (absl::Status st = s->init_data(); !st.ok()) return st;
  for (int attempt = 0; attempt < 5; ++attempt) {
    s->port_ = free_port();
    absl::Status st = s->pg_ctl("start");
    if (st.ok()) {
      s->running_ = true;
      return s;
    }
    if (attempt == 4)
      return absl::InternalError(absl::StrCat(st.message(), "\n", s->log()));
  }
  return absl::InternalError("unreachable");
}

// initdb takes ~1 s; a copy of a cluster initdb made once ~0.05 s. The
// template lives in the build tree (TIERLOCK_PG_TEMPLATE_DIR), one per
// PostgreSQL bin directory, made under a DirLock so parallel tests make it
// once. Every server gets its own copy (same system identifier: harmless).
absl::Status PostgresServer::init_data() {
  const std::string dir = dir_.path().string();
  std::string name = bin_;
  for (char& c : name) {
    if (c == '/') c = '_';
  }
  const std::filesystem::path root = TIERLOCK_PG_TEMPLATE_DIR;
  const std::filesystem::path templ = root / name;
  std::error_code ec;
  std::filesystem::create_directories(root, ec);
  absl::StatusOr<DirLock> lock = DirLock::open(root);
  if (!lock.ok()) return lock.status();
  absl::StatusOr<Guard> guard = lock->acquire();
  if (!guard.ok()) return guard.status();
  if (!std::filesystem::exists(templ / "PG_VERSION")) {
    if (absl::Status st = sh(absl::StrCat(kAsPostgres, bin_, "/initdb -D ",
                                          sh_quote(dir + "/data"),
                                          " -A trust -U tl --no-sync"));
        !st.ok()) {
      return st;
    }
    const std::string tmp = templ.string() + ".tmp";
    if (absl::Status st = sh(
            absl::StrCat("rm -rf ", sh_quote(tmp), " && cp -a ",
                         sh_quote(dir + "/data"), " ", sh_quote(tmp), " && mv ",
                         sh_quote(tmp), " ", sh_quote(templ.string())));
        !st.ok()) {
      return st;
    }
    return absl::OkStatus();
  }
  return sh(absl::StrCat("cp -a ", sh_quote(templ.string()), " ",
                         sh_quote(dir + "/data")));
}

absl::Status PostgresServer::pg_ctl(const std::string& what) {
  const std::string dir = dir_.path().string();
  std::string cmd =
      absl::StrCat(kAsPostgres, bin_, "/pg_ctl -D ", sh_quote(dir + "/data"));
  if (what == "start") {
    absl::StrAppend(
        &cmd, " -o ",
        sh_quote(absl::StrCat("-p ", port_, " -k ", dir,
                              " -c listen_addresses=127.0.0.1 -c fsync=off")),
        " -w -t 30 -l ", sh_quote(dir + "/log"), " start");
  } else {
    absl::StrAppend(&cmd, " -m immediate -w -t 30 stop");
  }
  return sh(cmd);
}

PostgresServer::~PostgresServer() {
  if (running_) (void)pg_ctl("stop");
}

std::string PostgresServer::conninfo() const {
  return absl::StrCat("host=127.0.0.1 port=", port_,
                      " user=tl dbname=postgres");
}

absl::Status PostgresServer::stop() {
  absl::Status s = pg_ctl("stop");
  if (s.ok()) running_ = false;
  return s;
}

absl::Status PostgresServer::restart_server() {
  absl::Status s = pg_ctl("start");
  if (s.ok()) running_ = true;
  return s;
}

std::string PostgresServer::log() const {
  return read_file(dir_.path() / "log");
}

// ------------------------------------------------------------ RedisServer

absl::StatusOr<std::unique_ptr<RedisServer>> RedisServer::start() {
  if (find_program("redis-server").empty()) {
    return absl::NotFoundError(
        "redis-server not installed; run scripts/deps.sh");
  }
  std::unique_ptr<RedisServer> s(new RedisServer);
  absl::Status st;
  for (int attempt = 0; attempt < 5; ++attempt) {
    s->port_ = free_port();
    st = s->launch();
    if (st.ok()) return s;
  }
  return st;
}

absl::Status RedisServer::launch() {
  const std::string dir = dir_.path().string();
  ::unlink((dir + "/pid").c_str());
  if (absl::Status st = sh(absl::StrCat(
          "redis-server --port ", port_,
          " --bind 127.0.0.1 --save '' --appendonly no", " --dir ",
          sh_quote(dir), " --daemonize yes --pidfile ", sh_quote(dir + "/pid"),
          " --logfile ", sh_quote(dir + "/log")));
      !st.ok()) {
    return st;
  }
  const bool up = daemon_ready(
      dir + "/pid", &pid_, absl::StrCat("redis-cli -p ", port_, " INFO server"),
      [](int pid) { return absl::StrCat("process_id:", pid, "\r"); });
  if (!up)
    return absl::InternalError(
        absl::StrCat("redis-server on port ", port_, " did not start"));
  return absl::OkStatus();
}

RedisServer::~RedisServer() { (void)stop(); }

absl::Status RedisServer::stop() {
  if (pid_ <= 0) return absl::OkStatus();
  const int pid = pid_;
  pid_ = -1;
  return kill_daemon(pid, "redis-server");
}

absl::Status RedisServer::restart_server() { return launch(); }

absl::StatusOr<std::string> RedisServer::cli(const std::string& args) {
  std::string out;
  if (absl::Status s =
          sh(absl::StrCat("redis-cli -p ", port_, " ", args), &out);
      !s.ok()) {
    return s;
  }
  return std::string(absl::StripTrailingAsciiWhitespace(out));
}

// ------------------------------------------------------------ PgbouncerServer

absl::StatusOr<std::unique_ptr<PgbouncerServer>> PgbouncerServer::start(
    const PostgresServer& backend, Options options) {
  if (find_program("pgbouncer").empty()) {
    return absl::NotFoundError("pgbouncer not installed; run scripts/deps.sh");
  }
  std::unique_ptr<PgbouncerServer> s(new PgbouncerServer);
  if (absl::Status st = give_to_postgres(s->dir_.path()); !st.ok()) return st;
  absl::Status st;
  for (int attempt = 0; attempt < 5; ++attempt) {
    s->port_ = free_port();
    st = s->launch(backend, options);
    if (st.ok()) return s;
  }
  return absl::InternalError(absl::StrCat(st.message(), "\n", s->log()));
}

absl::Status PgbouncerServer::launch(const PostgresServer& backend,
                                     const Options& o) {
  const std::string dir = dir_.path().string();
  ::unlink((dir + "/pid").c_str());
  {
    // auth_type any: no passwords; every server connection logs in as `tl`.
    std::ofstream ini(dir + "/pgbouncer.ini");
    ini << "[databases]\n"
        << "postgres = host=127.0.0.1 port=" << backend.port()
        << " dbname=postgres user=tl\n"
        << "[pgbouncer]\n"
        << "listen_addr = 127.0.0.1\n"
        << "listen_port = " << port_ << "\n"
        << "unix_socket_dir =\n"
        << "auth_type = any\n"
        << "pool_mode = " << o.pool_mode << "\n"
        << "default_pool_size = " << o.pool_size << "\n"
        << "max_client_conn = 200\n"
        << "server_round_robin = " << (o.round_robin ? 1 : 0) << "\n"
        << "logfile = " << dir << "/log\n"
        << "pidfile = " << dir << "/pid\n";
    if (!ini)
      return absl::InternalError("cannot write " + dir + "/pgbouncer.ini");
  }
  if (absl::Status st = sh(absl::StrCat(kAsPostgres, "pgbouncer -d ",
                                        sh_quote(dir + "/pgbouncer.ini")));
      !st.ok()) {
    return st;
  }
  const bool up =
      daemon_ready(dir + "/pid", &pid_,
                   absl::StrCat(postgres_bin(), "/psql ",
                                sh_quote(conninfo() + " connect_timeout=2"),
                                " -Atc 'SELECT 1'"),
                   [](int) { return std::string("1"); });
  if (!up) {
    if (pid_ > 0) (void)kill_daemon(pid_, "pgbouncer");
    pid_ = -1;
    return absl::InternalError(
        absl::StrCat("pgbouncer on port ", port_, " did not start"));
  }
  return absl::OkStatus();
}

PgbouncerServer::~PgbouncerServer() {
  if (pid_ > 0) (void)kill_daemon(pid_, "pgbouncer");
}

std::string PgbouncerServer::conninfo() const {
  return absl::StrCat("host=127.0.0.1 port=", port_,
                      " user=tl dbname=postgres");
}

std::string PgbouncerServer::log() const {
  return read_file(dir_.path() / "log");
}

// ------------------------------------------------------------ shared servers

namespace {

// Destroyed when the test binary exits normally (servers stopped, data
// directories removed).
struct SharedServers {
  std::unique_ptr<PostgresServer> pg;
  std::unique_ptr<RedisServer> redis;
};

SharedServers& env() {
  static SharedServers servers;
  return servers;
}

}  // namespace

PostgresServer& shared_postgres() {
  SharedServers& e = env();
  if (!e.pg) {
    absl::StatusOr<std::unique_ptr<PostgresServer>> s = PostgresServer::start();
    if (!s.ok()) {
      ADD_FAILURE() << "cannot start PostgreSQL: " << s.status();
      std::abort();
    }
    e.pg = std::move(*s);
  }
  return *e.pg;
}

RedisServer& shared_redis() {
  SharedServers& e = env();
  if (!e.redis) {
    absl::StatusOr<std::unique_ptr<RedisServer>> s = RedisServer::start();
    if (!s.ok()) {
      ADD_FAILURE() << "cannot start Redis: " << s.status();
      std::abort();
    }
    e.redis = std::move(*s);
  }
  return *e.redis;
}

}  // namespace tierlock::testing
