// Layering probe, compiled with tier/'s include root (src/CMakeLists.txt):
// queue/ and tier/ never include each other. Must fail: header not found.
#include "queue/lock_entry.h"
