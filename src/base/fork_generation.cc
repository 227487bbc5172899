// The fork generation: see fork_generation.h.
#include "base/fork_generation.h"

namespace tierlock::internal {

std::atomic<std::uint64_t> g_fork_generation{0};

}  // namespace tierlock::internal
