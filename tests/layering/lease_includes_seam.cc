// Layering probe, compiled with lease/'s include root (src/CMakeLists.txt):
// its own folder, base/ and the tier seam are visible. Must build.
#include "base/mutex.h"
#include "lease/backends/conn_pool.h"
#include "tier/tier_hold.h"
