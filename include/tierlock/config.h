// tierlock/config.h
//
// Process-wide settings:
//   set_wait_interrupt_signal - the signal tierlock uses to end a blocked
//   kernel wait early.
#ifndef TIERLOCK_CONFIG_H_
#define TIERLOCK_CONFIG_H_

#include "absl/status/status.h"

namespace tierlock {

// Sets the signal used to interrupt a thread that is blocked in flock(2) when
// its acquire is cancelled or times out.
//
// Why a signal: a thread blocked in flock can only be woken by the lock being
// granted or by a signal; tierlock sends the signal to that one thread
// (tgkill, then a per-thread timer_create/SIGEV_THREAD_ID timer), with a no-op
// handler installed without SA_RESTART, so flock returns EINTR in
// microseconds and nothing is left waiting in the kernel. The timer re-sends
// every 200 us until the thread has left the kernel, so a signal that lands
// just before flock is entered is not lost. The signal is unblocked in the
// waiting thread for the duration of the wait only.
//
// Default: SIGRTMAX - 7, installed on first need, but only if the program
// has neither a handler for it nor SIG_IGN: tierlock never replaces a handler
// it did not install. If it cannot use a signal, cancellable and timed kernel
// waits poll LOCK_NB with a backoff from 50 us to 1 ms instead (cancellation
// still returns within about 1 ms; handoff from another process may take up
// to 1 ms longer). Plain acquire() without timeout or stop token never uses a
// signal.
//
// `signo` 0 selects polling. Returns kFailedPrecondition if the program
// already handles or ignores `signo`, kInvalidArgument if it cannot be
// caught. Call it early, before acquires are in flight.
absl::Status set_wait_interrupt_signal(int signo);

}  // namespace tierlock

#endif  // TIERLOCK_CONFIG_H_
