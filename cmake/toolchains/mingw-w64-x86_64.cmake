# Cross-compiling tierlock for 64-bit Windows with Debian's MinGW-w64
# (g++-mingw-w64-x86-64-posix: the "posix" thread model, so std::thread,
# std::mutex and std::stop_token work). Tests run under wine64
# (CMAKE_CROSSCOMPILING_EMULATOR); see "Windows" in docs/design.md.
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR x86_64)

set(_tl_triple x86_64-w64-mingw32)
set(CMAKE_C_COMPILER ${_tl_triple}-gcc-posix)
set(CMAKE_CXX_COMPILER ${_tl_triple}-g++-posix)
set(CMAKE_RC_COMPILER ${_tl_triple}-windres)

# Headers and libraries of the target only from the MinGW sysroot (and from
# the prefix the Windows dependencies were built into, added by the caller
# through CMAKE_PREFIX_PATH / CMAKE_FIND_ROOT_PATH); programs from the host.
list(APPEND CMAKE_FIND_ROOT_PATH /usr/${_tl_triple})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# Debian's wine64 package installs the loader outside PATH.
if(NOT CMAKE_CROSSCOMPILING_EMULATOR)
  find_program(TIERLOCK_WINE64 NAMES wine64 PATHS /usr/lib/wine NO_CMAKE_FIND_ROOT_PATH)
  if(TIERLOCK_WINE64)
    set(CMAKE_CROSSCOMPILING_EMULATOR ${TIERLOCK_WINE64})
  endif()
endif()
