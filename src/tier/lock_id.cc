// LockId: see lock_id.h.
#include "tier/lock_id.h"

#include "absl/strings/str_cat.h"

namespace tierlock::internal {

std::filesystem::path LockId::display() const {
  switch (kind_) {
    case Kind::kFile:
      return lock_file();
    case Kind::kLease:
      return std::filesystem::path(
          absl::StrCat("lease:", lease_name().backend, "/", lease_name().key));
    case Kind::kNone:
      break;
  }
  return {};
}

}  // namespace tierlock::internal
