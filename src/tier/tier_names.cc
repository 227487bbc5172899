// Interned tier names: a leaked node set, so views stay valid past static
// destruction (a Guard released from an atexit handler may still report).
#include "tier/tier_names.h"

#include <string>

#include "absl/container/node_hash_set.h"
#include "base/mutex.h"

namespace tierlock::internal {

std::string_view intern_tier_name(std::string_view name) {
  if (name.empty()) return {};
  static auto* mu = new Mutex();
  static auto* names = new absl::node_hash_set<std::string>();
  UniqueLock lock(*mu);
  return *names->emplace(name).first;
}

}  // namespace tierlock::internal
