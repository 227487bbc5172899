// Layering probe, compiled with platform/'s include root (src/CMakeLists.txt):
// nothing includes a higher layer. Must fail: header not found.
#include "api/testing_hooks.h"
