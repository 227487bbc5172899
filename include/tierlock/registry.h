// tierlock/registry.h
//
// Kept for code that includes it: Registry now lives in diagnostics.h.
#ifndef TIERLOCK_REGISTRY_H_
#define TIERLOCK_REGISTRY_H_

#include "tierlock/diagnostics.h"  // IWYU pragma: export

#endif  // TIERLOCK_REGISTRY_H_
