// Layering probe, compiled with lease/'s include root (src/CMakeLists.txt):
// of the tier layer, leases see only its seam (tier_hold.h). Must fail:
// header not found.
#include "tier/tier_check.h"
