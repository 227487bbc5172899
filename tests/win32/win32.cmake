# tierlock's Windows tests (the mingw preset), run under wine64 through
# CMAKE_CROSSCOMPILING_EMULATOR. Included by tests/CMakeLists.txt on WIN32
# (CMAKE_CURRENT_SOURCE_DIR is tests/; this folder is CMAKE_CURRENT_LIST_DIR).
#
#   GoogleTest          built from Debian's googletest source package
#                       (/usr/src/googletest), in this build.
#   tl_win32_helper     "another process" for cross-process tests.
#   win32_*_test        one executable per tests/win32/win32_*_test.cc; one ctest
#                       test per TEST (gtest_add_tests reads the sources, so
#                       the build never has to start Wine to list them).
#   guard_test, ...     the platform-neutral tests of the POSIX suite
#                       (_tl_portable_tests), on Windows versions of their
#                       support (support/win32_{subprocess,fixture}.cc) with
#                       tl_win32_helper as "another process".
#   wine.prefix         fixture: creates the Wine prefix in the build dir and
#                       keeps one wineserver running for the whole run (the
#                       first start, wineboot, takes seconds); wine.stop ends it.
set(TIERLOCK_GTEST_SOURCE_DIR /usr/src/googletest CACHE PATH
    "GoogleTest's source tree (Debian: googletest), built for Windows")
set(INSTALL_GTEST OFF CACHE BOOL "" FORCE)
set(BUILD_GMOCK OFF CACHE BOOL "" FORCE)
add_subdirectory(${TIERLOCK_GTEST_SOURCE_DIR} ${CMAKE_BINARY_DIR}/_deps/googletest
                 EXCLUDE_FROM_ALL SYSTEM)
include(GoogleTest)

add_library(tierlock_win32_test_support STATIC
  support/win32_child.cc
  support/win32_subprocess.cc
  support/win32_fixture.cc
  support/fixture_common.cc
  support/status.cc
  support/internal.cc)
target_include_directories(tierlock_win32_test_support PUBLIC
  ${CMAKE_CURRENT_SOURCE_DIR} ${PROJECT_SOURCE_DIR}/src)
target_link_libraries(tierlock_win32_test_support
  PUBLIC tierlock::tierlock GTest::gtest absl::strings absl::status
         absl::statusor Threads::Threads tierlock_warnings)

add_executable(tl_win32_helper helpers/win32_helper.cc)
target_link_libraries(tl_win32_helper PRIVATE tierlock::tierlock tierlock_warnings)
# wmain, and no DLLs to find under Wine: link the runtimes statically.
target_link_options(tl_win32_helper PRIVATE -municode -static)

set(_tl_wine_env "WINEPREFIX=${CMAKE_BINARY_DIR}/wineprefix" "WINEDEBUG=-all")
find_program(TIERLOCK_WINESERVER NAMES wineserver64 wineserver
             PATHS /usr/lib/wine NO_CMAKE_FIND_ROOT_PATH)
if(NOT CMAKE_CROSSCOMPILING_EMULATOR AND NOT CMAKE_HOST_WIN32)
  message(WARNING "tierlock: no wine64 found: the Windows tests cannot run here")
endif()
if(CMAKE_CROSSCOMPILING_EMULATOR AND TIERLOCK_WINESERVER)
  add_test(NAME wine.prefix
    COMMAND ${CMAKE_COMMAND} -DWINE=${CMAKE_CROSSCOMPILING_EMULATOR}
            -DWINESERVER=${TIERLOCK_WINESERVER} -DACTION=start
            -P ${CMAKE_CURRENT_LIST_DIR}/win32_wine.cmake)
  add_test(NAME wine.stop
    COMMAND ${CMAKE_COMMAND} -DWINE=${CMAKE_CROSSCOMPILING_EMULATOR}
            -DWINESERVER=${TIERLOCK_WINESERVER} -DACTION=stop
            -P ${CMAKE_CURRENT_LIST_DIR}/win32_wine.cmake)
  set_tests_properties(wine.prefix PROPERTIES
    FIXTURES_SETUP wine ENVIRONMENT "${_tl_wine_env}" TIMEOUT 300 LABELS tierlock)
  set_tests_properties(wine.stop PROPERTIES
    FIXTURES_CLEANUP wine ENVIRONMENT "${_tl_wine_env}" LABELS tierlock)
endif()

file(GLOB _tl_win32_tests CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/win32_*_test.cc)
# Tests of the POSIX suite that need nothing POSIX-only (no fork, /proc,
# signals, symlinks, uid/gid): they run unchanged on Windows.
set(_tl_portable_tests api/guard_test api/registry_test)
# Tests in those files that cannot run on Windows, with the reason; shown
# by ctest as disabled, not hidden.
set(_tl_not_on_windows
  # Needs a directory symlink: MinGW's libstdc++ cannot create one
  # ("Function not implemented") and Wine 8 cannot either (design.md).
  GuardTest.PathsAreCanonicalAndAbsolute
  RegistryTest.DifferentSpellingsShareOneEntry
  RegistryTest.DifferentSpellingsExcludeEachOther)
foreach(_name IN LISTS _tl_portable_tests)
  list(APPEND _tl_win32_tests ${CMAKE_CURRENT_SOURCE_DIR}/${_name}.cc)
endforeach()
foreach(_src IN LISTS _tl_win32_tests)
  get_filename_component(_name ${_src} NAME_WE)
  add_executable(${_name} ${_src})
  target_link_libraries(${_name} PRIVATE
    tierlock::tierlock tierlock_win32_test_support tierlock_warnings
    GTest::gtest GTest::gtest_main)
  target_link_options(${_name} PRIVATE -static)
  # support/helpers.h: a bare name, found beside the test (win32_subprocess.cc).
  target_compile_definitions(${_name} PRIVATE
    TIERLOCK_HELPER_PATH="tl_win32_helper.exe" TIERLOCK_FLOCK_PATH="")
  add_dependencies(${_name} tl_win32_helper)
  if(CMAKE_CROSSCOMPILING_EMULATOR)
    # Wine failing to start a program is retried (win32_run.sh says why).
    set_target_properties(${_name} PROPERTIES CROSSCOMPILING_EMULATOR
      "sh;${CMAKE_CURRENT_LIST_DIR}/win32_run.sh;${CMAKE_CROSSCOMPILING_EMULATOR}")
  endif()
  gtest_add_tests(TARGET ${_name} TEST_LIST _tl_added)
  # The working directory is C:\ (the prefix's drive_c), the drive the
  # temporary directories are on: a relative path from there can reach them
  # (the build directory is on Wine's Z: drive).
  set_tests_properties(${_tl_added} PROPERTIES
    ENVIRONMENT "${_tl_wine_env}" FIXTURES_REQUIRED wine TIMEOUT 120
    LABELS tierlock WORKING_DIRECTORY ${CMAKE_BINARY_DIR}/wineprefix/drive_c)
  foreach(_test IN LISTS _tl_added)
    if(_test IN_LIST _tl_not_on_windows)
      set_tests_properties(${_test} PROPERTIES DISABLED TRUE)
    endif()
    # As in the POSIX suite: *StressTest suites are labelled `stress`
    # (RegistryStressTest takes ~100 s under Wine, which creates files slowly).
    if(_test MATCHES "^[A-Za-z0-9_]*StressTest\\.")
      set_tests_properties(${_test} PROPERTIES LABELS stress TIMEOUT 300)
    endif()
  endforeach()
endforeach()
