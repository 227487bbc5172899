// Layering probe, compiled with queue/'s include root (src/CMakeLists.txt):
// queue/ and tier/ never include each other. Must fail: header not found.
#include "tier/tier_check.h"
