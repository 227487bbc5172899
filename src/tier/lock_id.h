// src/tier/lock_id.h
//
// A lock as the tier checks know it (internal):
//   LeaseName - a lease's name: its backend and key.
//   LockId    - a lock's identity (a lock file or a lease) and its node in
//               the learned order.
#ifndef TIERLOCK_SRC_TIER_LOCK_ID_H_
#define TIERLOCK_SRC_TIER_LOCK_ID_H_

#include <cstdint>
#include <filesystem>
#include <string>
#include <type_traits>

namespace tierlock::internal {

// A lease as reports name it: "lease:BACKEND/KEY".
struct LeaseName {
  std::string backend;
  std::string key;
};

// LockId
//
// Which lock a hold is of: a pointer to the lock's name, which must stay
// valid while a hold of it is recorded, plus the lock's learned-order node.
// Two ids are the same lock when they point at the same name (so re-entry is
// one comparison): a lock file's name is its registry entry's path, one per
// lock file in the process; a lease's is the LeaseName its acquire made, so
// two acquires of one lease key are two locks (the service refuses the
// second). Only lock files take part in the learned order (node non-zero).
// Trivially copyable: it is copied into every recorded hold.
class LockId {
 public:
  enum class Kind : std::uint8_t { kNone, kFile, kLease };

  // No lock: reports show an empty path.
  LockId() = default;
  // A lock file. `node`: its learned-order node (0 if none).
  static LockId file(const std::filesystem::path& lock_file,
                     std::uint32_t node) {
    return LockId(&lock_file, node, Kind::kFile);
  }
  // A lease.
  static LockId lease(const LeaseName& name) {
    return LockId(&name, 0, Kind::kLease);
  }

  Kind kind() const { return kind_; }
  // The lock file; must be a kFile id.
  const std::filesystem::path& lock_file() const {
    return *static_cast<const std::filesystem::path*>(name_);
  }
  // The lease's name; must be a kLease id.
  const LeaseName& lease_name() const {
    return *static_cast<const LeaseName*>(name_);
  }
  // The learned-order node; 0: none (leases, or no node looked up).
  std::uint32_t node() const { return node_; }

  // Returns the lock as reports and LockContext::held() show it: the lock
  // file's path, or "lease:BACKEND/KEY" (escaped where it is printed).
  std::filesystem::path display() const;

  friend bool operator==(const LockId& a, const LockId& b) {
    return a.name_ == b.name_;
  }

 private:
  LockId(const void* name, std::uint32_t node, Kind kind)
      : name_(name), node_(node), kind_(kind) {}

  const void* name_ = nullptr;
  std::uint32_t node_ = 0;
  Kind kind_ = Kind::kNone;
};
static_assert(std::is_trivially_copyable_v<LockId>);

}  // namespace tierlock::internal

#endif  // TIERLOCK_SRC_TIER_LOCK_ID_H_
