// tierlock/lock_context.h
//
// Defines the held-lock stack that tier checks follow:
//   LockContext        - the locks one logical task holds, whichever thread
//                        it runs on.
//   LockContext::Scope - makes a context current on this thread for a scope.
//   kHeldEnvVar        - the environment variable that passes a held stack
//                        to a child.
#ifndef TIERLOCK_LOCK_CONTEXT_H_
#define TIERLOCK_LOCK_CONTEXT_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tierlock/tier.h"

namespace tierlock {

// The environment variable through which `tierlock run` (or any program,
// with LockContext::held_env()) tells a child process which tiered locks its
// parent holds. Format: see docs/design.md, "Tier ordering". A malformed
// entry is ignored with a one-line warning on stderr naming it; the others
// are still checked. Entries naming a pid that has exited are kept (the lock
// may outlive it: the command inherits its descriptor).
inline constexpr std::string_view kHeldEnvVar = "TIERLOCK_HELD";

// LockContext
//
// The locks a logical task holds, for tier checks (tier.h). Every thread has
// a default context of its own; a task that moves between threads (a
// coroutine, a callback chain on an executor) creates a LockContext and binds
// it with a Scope wherever it runs, so its held stack follows it. An acquire
// checks and records into the context current on the calling thread at the
// call; an async acquire captures the caller's context at the call. A hold is
// removed from the context that took it when it is released, on whatever
// thread.
//
// A LockContext is a cheap handle (a shared pointer): copies share one stack.
// The stack lives while a handle, a Scope or a hold refers to it.
//
// Thread-safety: all members are thread-safe. Binding one context on two
// threads at once is allowed (both record into it) but then the two are one
// task as far as the checks go.
//
// Example:
//   tierlock::LockContext task("fetch #42");
//   pool.run([task] {
//     tierlock::LockContext::Scope bind(task);
//     auto g = cache_lock.acquire();  // checked against what `task` holds
//   });
class LockContext {
 public:
  // The stack itself: opaque, defined and used only inside the library.
  struct State;

  // Creates a new, empty context. `name` appears in reports (default: the
  // name of the first thread that records into it, "thread <tid>").
  explicit LockContext(std::string name = {});

  // Returns the context current on this thread: the innermost Scope's, or
  // the thread's own default context.
  static LockContext current();

  // Returns the name used in reports.
  std::string name() const;
  // Returns the locks this context holds, oldest first, without those
  // inherited from the parent process (see inherited()).
  std::vector<HeldLock> held() const;
  // Returns the tiered locks the parent process declared it holds
  // (TIERLOCK_HELD at the first check in this process).
  static std::vector<HeldLock> inherited();
  // Returns the value of TIERLOCK_HELD to give a child process: the inherited
  // stack plus this context's tiered holds. Empty if there is none. A tier
  // name over 1024 bytes (a path over 4096) is cut, ending in "..."; past 64
  // entries or 64 KiB the rest are left out and counted, and the child says
  // so (docs/design.md, "Tier ordering").
  std::string held_env() const;

  friend bool operator==(const LockContext& a, const LockContext& b) {
    return a.state_ == b.state_;
  }

  // Scope
  //
  // Makes a context current on the constructing thread until destroyed, then
  // restores the previous one. Scopes nest; they must be destroyed on the
  // thread that made them, innermost first. The thread cannot release what
  // the contexts below the Scope hold (its own default context, outer
  // Scopes') until the Scope ends, so the learned order nests the task's
  // acquires under those holds too, and asking for one of them again is the
  // re-entry error. Declared tiers are checked against the task's holds only.
  class [[nodiscard]] Scope {
   public:
    explicit Scope(const LockContext& context);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    std::shared_ptr<State> state_;
    const std::shared_ptr<State>* previous_;
  };

 private:
  explicit LockContext(std::shared_ptr<State> state)
      : state_(std::move(state)) {}
  std::shared_ptr<State> state_;
};

}  // namespace tierlock

#endif  // TIERLOCK_LOCK_CONTEXT_H_
