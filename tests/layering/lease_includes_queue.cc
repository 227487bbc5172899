// Layering probe, compiled with lease/'s include root (src/CMakeLists.txt):
// leases reach the queue through the api's public headers only. Must fail:
// header not found.
#include "queue/lock_entry.h"
