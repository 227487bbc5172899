// Layering probe, compiled with queue/'s include root (src/CMakeLists.txt):
// a lower layer is visible. Must build.
#include "holders/holder_record.h"
#include "platform/platform.h"
#include "queue/lock_file.h"
