// The Lockable members' tier holds: see lockable_holds.h.
#include "tier/lockable_holds.h"

#include <atomic>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "base/mutex.h"

namespace tierlock::internal {
namespace {

struct LockableHolds {
  Mutex mu;
  absl::flat_hash_map<std::pair<const void*, int>,
                      std::vector<std::pair<ContextState*, std::uint64_t>>>
      by_entry ABSL_GUARDED_BY(mu);
  std::atomic<std::size_t> count{0};
};

LockableHolds& lockable_holds() {
  static auto* h = new LockableHolds();  // leaked: holds may outlive statics
  return *h;
}

}  // namespace

void record_lockable_hold(const void* entry, Mode mode, ContextState* ctx,
                          std::uint64_t hold_id) {
  LockableHolds& h = lockable_holds();
  UniqueLock lock(h.mu);
  h.by_entry[{entry, static_cast<int>(mode)}].emplace_back(ctx, hold_id);
  h.count.fetch_add(1, std::memory_order_relaxed);
}

void forget_lockable_hold(const void* entry, Mode mode) noexcept {
  LockableHolds& h = lockable_holds();
  if (h.count.load(std::memory_order_relaxed) == 0) return;
  ContextState* ctx = nullptr;
  std::uint64_t id = 0;
  {
    UniqueLock lock(h.mu);
    auto it = h.by_entry.find(std::pair{entry, static_cast<int>(mode)});
    if (it == h.by_entry.end()) return;
    std::tie(ctx, id) = it->second.back();
    it->second.pop_back();
    if (it->second.empty()) h.by_entry.erase(it);
    h.count.fetch_sub(1, std::memory_order_relaxed);
  }
  forget_hold(*ctx, id);
}

}  // namespace tierlock::internal
