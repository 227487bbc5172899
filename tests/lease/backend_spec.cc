// tests/lease/backend_spec.cc -- see backend_spec.h.
#include "lease/backend_spec.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "tierlock/lease_memory.h"
#ifdef TIERLOCK_HAVE_LEASE_POSTGRES
#include "tierlock/lease_postgres.h"
#endif
#ifdef TIERLOCK_HAVE_LEASE_SQLITE
#include "tierlock/lease_sqlite.h"
#endif
#ifdef TIERLOCK_HAVE_LEASE_REDIS
#include "tierlock/lease_redis.h"
#endif
#ifdef TIERLOCK_HAVE_LEASE_ETCD
#include "tierlock/lease_etcd.h"
#endif

namespace tierlock::testing {

absl::StatusOr<std::shared_ptr<LeaseBackend>> make_backend_from_spec(
    const std::string& spec) {
  const std::size_t colon = spec.find(':');
  const std::string kind = spec.substr(0, colon);
  const std::string rest =
      colon == std::string::npos ? "" : spec.substr(colon + 1);
  if (kind == "memory")
    return std::shared_ptr<LeaseBackend>(MemoryLeaseBackend::create());
#ifdef TIERLOCK_HAVE_LEASE_SQLITE
  if (kind == "sqlite") {
    SqliteLeaseOptions o;
    o.path = rest;
    auto b = SqliteLeaseBackend::create(o);
    if (!b.ok()) return b.status();
    return std::shared_ptr<LeaseBackend>(*b);
  }
#endif
#ifdef TIERLOCK_HAVE_LEASE_POSTGRES
  if (kind == "postgres-advisory" || kind == "postgres-table") {
    PostgresLeaseOptions o;
    o.conninfo = rest;
    o.mode = kind == "postgres-advisory"
                 ? PostgresLeaseOptions::Mode::kAdvisory
                 : PostgresLeaseOptions::Mode::kLeaseTable;
    auto b = PostgresLeaseBackend::create(o);
    if (!b.ok()) return b.status();
    return std::shared_ptr<LeaseBackend>(*b);
  }
#endif
#ifdef TIERLOCK_HAVE_LEASE_REDIS
  if (kind == "redis") {
    RedisLeaseOptions o;
    const std::size_t c = rest.rfind(':');
    o.host = rest.substr(0, c);
    if (c == std::string::npos ||
        !absl::SimpleAtoi(rest.substr(c + 1), &o.port)) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad redis spec '", spec, "'"));
    }
    auto b = RedisLeaseBackend::create(o);
    if (!b.ok()) return b.status();
    return std::shared_ptr<LeaseBackend>(*b);
  }
#endif
#ifdef TIERLOCK_HAVE_LEASE_ETCD
  if (kind == "etcd") {
    absl::StatusOr<EtcdLeaseOptions> o =
        EtcdLeaseOptions::from_url("etcd://" + rest);
    if (!o.ok()) return o.status();
    auto b = EtcdLeaseBackend::create(*o);
    if (!b.ok()) return b.status();
    return std::shared_ptr<LeaseBackend>(*b);
  }
#endif
  return absl::UnimplementedError(
      absl::StrCat("backend spec '", spec, "': not built"));
}

}  // namespace tierlock::testing
