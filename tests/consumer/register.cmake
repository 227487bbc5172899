# tests/consumer/register.cmake — included by tests/CMakeLists.txt.
#
# Registers ctest tests (label `consumer`) that use tierlock the way a user does,
# from an installed tree rather than from this build:
#   consumer.clean         removes the previous install prefix and consumer build
#   consumer.install       cmake --install <build> --prefix <build>/consumer-install
#   consumer.find_package  builds tests/consumer with find_package(tierlock) against
#                          that prefix (same compiler, same build type) and runs it
#   consumer.find_package_other_build_type
#                          the same in the other build type (Debug <-> Release)
#   consumer.pkg_config    compiles tests/consumer/main.cc with
#                          `pkg-config --cflags --libs tierlock` and runs it; reported
#                          as skipped only when pkg-config is not installed
#   consumer.other_compiler
#                          builds tests/consumer with the other compiler (clang++
#                          against a GCC-built install, g++ against a clang-built
#                          one) and runs it: the public ABI must not depend on the
#                          compiler. Reported as skipped only when that compiler is
#                          not installed; not registered in sanitizer builds (two
#                          compilers' sanitizer runtimes do not mix)
#   consumer.add_subdirectory
#                          builds tests/consumer/subdir, a project that vendors this
#                          source tree with add_subdirectory and CLI11 made
#                          unfindable, and runs it (no install needed)
# Fixtures order them (clean -> install -> the consumers), so
# `ctest -L consumer` or `ctest -R consumer.pkg_config` runs what is needed.
#
# Sanitizer builds: the installed library is instrumented (TIERLOCK_SANITIZE), so
# both consumers are compiled and linked with the same -fsanitize flags rather than
# skipped: the install and the exported link interface get checked there too.

set(_tlc_cxx_flags "")
set(_tlc_link_flags "")
if(TIERLOCK_SANITIZE)
  list(JOIN TIERLOCK_SANITIZE "," _tlc_san)
  set(_tlc_cxx_flags "-fsanitize=${_tlc_san} -fno-omit-frame-pointer")
  set(_tlc_link_flags "-fsanitize=${_tlc_san}")
endif()

# Vendoring: configures and builds this source tree as a subproject (its own
# build of the library, so it needs no install) with CLI11 unfindable. The
# service lease backends are left out only to halve the build (they do not
# depend on CLI11); the lease front is still built.
set(_tlc_subdir_build "${CMAKE_BINARY_DIR}/consumer-subdir")
add_test(NAME consumer.add_subdirectory
  COMMAND "${CMAKE_CTEST_COMMAND}"
    --build-and-test "${CMAKE_CURRENT_LIST_DIR}/subdir" "${_tlc_subdir_build}"
    --build-generator "${CMAKE_GENERATOR}"
    --build-makeprogram "${CMAKE_MAKE_PROGRAM}"
    --build-project tierlock_subdir_consumer
    --build-options
      "-DTIERLOCK_SOURCE_DIR=${PROJECT_SOURCE_DIR}"
      -DCMAKE_DISABLE_FIND_PACKAGE_CLI11=TRUE
      -DTIERLOCK_LEASE_POSTGRES=OFF -DTIERLOCK_LEASE_SQLITE=OFF -DTIERLOCK_LEASE_REDIS=OFF
      "-DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER}"
      "-DCMAKE_BUILD_TYPE=${CMAKE_BUILD_TYPE}"
      "-DCMAKE_CXX_FLAGS=${_tlc_cxx_flags}"
      "-DCMAKE_EXE_LINKER_FLAGS=${_tlc_link_flags}"
    --test-command tierlock_subdir_consumer)
set_tests_properties(consumer.add_subdirectory PROPERTIES LABELS consumer TIMEOUT 1800)

if(NOT TIERLOCK_INSTALL)
  message(STATUS "tierlock: TIERLOCK_INSTALL is OFF; install consumer tests not registered")
  return()
endif()

set(_tlc_prefix "${CMAKE_BINARY_DIR}/consumer-install")
set(_tlc_build "${CMAKE_BINARY_DIR}/consumer-build")
set(_tlc_pc_out "${CMAKE_BINARY_DIR}/consumer-pkg-config")

set(_tlc_config_args "")
get_property(_tlc_multi GLOBAL PROPERTY GENERATOR_IS_MULTI_CONFIG)
if(_tlc_multi)
  set(_tlc_config_args --config $<CONFIG>)
endif()

add_test(NAME consumer.clean
  COMMAND "${CMAKE_COMMAND}" -E rm -rf "${_tlc_prefix}" "${_tlc_build}" "${_tlc_build}-lease"
          "${_tlc_build}-other" "${_tlc_build}-other-compiler"
          "${_tlc_pc_out}")
set_tests_properties(consumer.clean PROPERTIES
  FIXTURES_SETUP tierlock_consumer_clean)

add_test(NAME consumer.install
  COMMAND "${CMAKE_COMMAND}" --install "${CMAKE_BINARY_DIR}" --prefix "${_tlc_prefix}"
          ${_tlc_config_args})
set_tests_properties(consumer.install PROPERTIES
  FIXTURES_REQUIRED tierlock_consumer_clean
  FIXTURES_SETUP tierlock_consumer_installed)

# One consumer build and run against the install: test NAME builds
# tests/consumer in BUILD_DIR with BUILD_TYPE and runs PROGRAM; CXX names
# another compiler than this build's; OPTIONS are extra -D options.
function(_tlc_consumer_test name build_dir build_type program)
  cmake_parse_arguments(A "" "CXX" "OPTIONS" ${ARGN})
  if(NOT A_CXX)
    set(A_CXX "${CMAKE_CXX_COMPILER}")
  endif()
  add_test(NAME ${name}
    COMMAND "${CMAKE_CTEST_COMMAND}"
      --build-and-test "${CMAKE_CURRENT_FUNCTION_LIST_DIR}" "${build_dir}"
      --build-generator "${CMAKE_GENERATOR}"
      --build-makeprogram "${CMAKE_MAKE_PROGRAM}"
      --build-project tierlock_consumer
      --build-noclean
      --build-options
        "-DCMAKE_PREFIX_PATH=${_tlc_prefix}"
        "-DTIERLOCK_EXPECTED_PREFIX=${_tlc_prefix}"
        ${A_OPTIONS}
        "-DCMAKE_CXX_COMPILER=${A_CXX}"
        "-DCMAKE_BUILD_TYPE=${build_type}"
        "-DCMAKE_CXX_FLAGS=${_tlc_cxx_flags}"
        "-DCMAKE_EXE_LINKER_FLAGS=${_tlc_link_flags}"
      --test-command ${program})
  set_tests_properties(${name} PROPERTIES
    FIXTURES_REQUIRED tierlock_consumer_installed LABELS consumer TIMEOUT 300)
endfunction()

_tlc_consumer_test(consumer.find_package "${_tlc_build}" "${CMAKE_BUILD_TYPE}"
                   tierlock_consumer)

# The same consumer in the other build type (a Debug application against a
# library built otherwise, or the reverse): the tier checks' starting mode
# follows the application's NDEBUG, and the learned order is in every build.
if(CMAKE_BUILD_TYPE STREQUAL "Debug")
  set(_tlc_other_type Release)
else()
  set(_tlc_other_type Debug)
endif()
_tlc_consumer_test(consumer.find_package_other_build_type "${_tlc_build}-other"
                   "${_tlc_other_type}" tierlock_consumer)

# The lease components (find_package COMPONENTS lease lease_sqlite), when this
# build has them: their export sets and the client-library dependency.
if(TARGET tierlock_lease AND TARGET tierlock_lease_sqlite)
  _tlc_consumer_test(consumer.find_package_lease "${_tlc_build}-lease"
                     "${CMAKE_BUILD_TYPE}" tierlock_lease_consumer
                     OPTIONS "-DTIERLOCK_CONSUMER_LEASES=ON")
endif()

# The other compiler against this install. Every acquire's signature carries
# SourceLocation, and tier reports carry it in HeldLock: a type that changed
# with the compiler made a clang-built program fail to link against a
# GCC-built library.
set(_tlc_other_cxx_names "")
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  set(_tlc_other_cxx_names clang++ clang++-19 clang++-18 clang++-17 clang++-16 clang++-15
                           clang++-14)
elseif(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  set(_tlc_other_cxx_names g++ g++-14 g++-13 g++-12)
endif()
if(TIERLOCK_SANITIZE)
  message(STATUS "tierlock: consumer.other_compiler not registered in a sanitizer build "
                 "(two compilers' sanitizer runtimes do not mix)")
elseif(_tlc_other_cxx_names)
  find_program(TIERLOCK_CONSUMER_OTHER_CXX NAMES ${_tlc_other_cxx_names}
               DOC "The compiler consumer.other_compiler builds tests/consumer with")
  if(TIERLOCK_CONSUMER_OTHER_CXX)
    _tlc_consumer_test(consumer.other_compiler "${_tlc_build}-other-compiler"
                       "${CMAKE_BUILD_TYPE}" tierlock_consumer
                       CXX "${TIERLOCK_CONSUMER_OTHER_CXX}")
  else()
    list(GET _tlc_other_cxx_names 0 _tlc_other_cxx)
    add_test(NAME consumer.other_compiler
      COMMAND "${CMAKE_COMMAND}" -E echo
        "tierlock-consumer: SKIPPED: ${_tlc_other_cxx} is not installed; the "
        "${CMAKE_CXX_COMPILER_ID}-built library was not checked against a consumer "
        "built by another compiler")
    set_tests_properties(consumer.other_compiler PROPERTIES
      SKIP_REGULAR_EXPRESSION "tierlock-consumer: SKIPPED" LABELS consumer)
  endif()
endif()

find_program(TIERLOCK_PKG_CONFIG_PROGRAM NAMES pkg-config pkgconf
             DOC "pkg-config, for the consumer.pkg_config test")
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(_tlc_pc_path "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
else()
  set(_tlc_pc_path "${_tlc_prefix}/${CMAKE_INSTALL_LIBDIR}/pkgconfig")
endif()
add_test(NAME consumer.pkg_config
  COMMAND "${CMAKE_COMMAND}"
    "-DPKG_CONFIG=${TIERLOCK_PKG_CONFIG_PROGRAM}"
    "-DPKG_CONFIG_DIR=${_tlc_pc_path}"
    "-DCXX=${CMAKE_CXX_COMPILER}"
    "-DCXX_FLAGS=${_tlc_cxx_flags}"
    "-DSOURCE=${CMAKE_CURRENT_LIST_DIR}/main.cc"
    "-DOUTPUT=${_tlc_pc_out}/tierlock_consumer"
    -P "${CMAKE_CURRENT_LIST_DIR}/pkg_config_check.cmake")

set_tests_properties(consumer.pkg_config PROPERTIES
  FIXTURES_REQUIRED tierlock_consumer_installed)
set_tests_properties(consumer.pkg_config PROPERTIES
  SKIP_REGULAR_EXPRESSION "tierlock-consumer: SKIPPED")
set_tests_properties(
  consumer.clean consumer.install consumer.pkg_config
  PROPERTIES LABELS consumer TIMEOUT 300)
