# Dependencies for the Windows (MinGW) build, which Debian does not package
# for MinGW: Abseil is compiled from Debian's abseil source package (fetched
# by scripts/fetch-abseil-source.sh into TIERLOCK_ABSL_SOURCE_DIR), only the
# libraries tierlock links, inside this build (cached there: a rebuild
# compiles nothing). See docs/design.md, "Windows".
if(NOT EXISTS "${TIERLOCK_ABSL_SOURCE_DIR}/src/CMakeLists.txt")
  message(STATUS "tierlock: fetching Debian's abseil source into ${TIERLOCK_ABSL_SOURCE_DIR}")
  execute_process(
    COMMAND "${PROJECT_SOURCE_DIR}/scripts/fetch-abseil-source.sh"
            "${TIERLOCK_ABSL_SOURCE_DIR}"
    RESULT_VARIABLE _tl_fetch_rc)
  if(NOT _tl_fetch_rc EQUAL 0)
    message(FATAL_ERROR "tierlock: could not fetch the abseil source (see above)")
  endif()
endif()
set(ABSL_PROPAGATE_CXX_STD ON CACHE BOOL "" FORCE)
set(ABSL_BUILD_TESTING OFF CACHE BOOL "" FORCE)
set(ABSL_ENABLE_INSTALL OFF CACHE BOOL "" FORCE)
set(BUILD_TESTING OFF CACHE BOOL "" FORCE)
# SYSTEM: Abseil's headers are not held to tierlock's warning flags.
add_subdirectory("${TIERLOCK_ABSL_SOURCE_DIR}/src" "${CMAKE_BINARY_DIR}/_deps/absl"
                 EXCLUDE_FROM_ALL SYSTEM)
