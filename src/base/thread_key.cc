// Thread keys: see thread_key.h.
#include "base/thread_key.h"

#include <atomic>

namespace tierlock::internal {

ThreadKey current_thread_key() noexcept {
  static std::atomic<std::uint64_t> next{1};
  thread_local const std::uint64_t key =
      next.fetch_add(1, std::memory_order_relaxed);
  return ThreadKey{key};
}

}  // namespace tierlock::internal
