// A minimal lease user, built against an installed tierlock with
// find_package(tierlock COMPONENTS lease lease_sqlite): takes a lease on the
// in-memory backend and on an SQLite file, checks the fencing tokens, releases.
// Exits 0 on success.
#include <stdlib.h>  // mkdtemp

#include <filesystem>
#include <iostream>
#include <string>
#include <system_error>

#include "tierlock/lease.h"
#include "tierlock/lease_memory.h"
#include "tierlock/lease_sqlite.h"

namespace {

int fail(const std::string& what) {
  std::cerr << "tierlock_lease_consumer: " << what << "\n";
  return 1;
}

int use(std::shared_ptr<tierlock::LeaseBackend> backend) {
  absl::StatusOr<tierlock::LeaseLock> locks =
      tierlock::LeaseLock::create(std::move(backend));
  if (!locks.ok()) return fail(locks.status().ToString());
  absl::StatusOr<tierlock::Lease> first = locks->acquire("consumer");
  if (!first.ok()) return fail(first.status().ToString());
  const std::optional<std::uint64_t> token = first->token();
  if (!token.has_value()) return fail("no fencing token");
  absl::StatusOr<bool> released = first->release();
  if (!released.ok() || !*released)
    return fail("release did not find the lease held");
  absl::StatusOr<tierlock::Lease> second = locks->acquire("consumer");
  if (!second.ok()) return fail(second.status().ToString());
  if (!(second->token() > token))
    return fail("the second grant's token is not larger");
  std::cout << "leased 'consumer' on " << locks->backend()->name()
            << ", tokens " << *token << " then " << *second->token() << "\n";
  return 0;
}

}  // namespace

int main() {
  std::string templ = (std::filesystem::temp_directory_path() /
                       "tierlock-lease-consumer.XXXXXX")
                          .string();
  if (::mkdtemp(templ.data()) == nullptr) return fail("mkdtemp failed");
  const std::filesystem::path dir(templ);
  int rc = use(tierlock::MemoryLeaseBackend::create());
  if (rc == 0) {
    tierlock::SqliteLeaseOptions options;
    options.path = dir / "leases.db";
    absl::StatusOr<std::shared_ptr<tierlock::SqliteLeaseBackend>> sqlite =
        tierlock::SqliteLeaseBackend::create(options);
    rc = sqlite.ok() ? use(*sqlite) : fail(sqlite.status().ToString());
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return rc;
}
