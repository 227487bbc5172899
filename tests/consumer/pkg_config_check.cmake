# Run with cmake -P by the consumer.pkg_config test (see register.cmake):
# compiles SOURCE with `pkg-config --cflags --libs tierlock` found through
# PKG_CONFIG_DIR, then runs the program. Inputs: PKG_CONFIG, PKG_CONFIG_DIR, CXX,
# CXX_FLAGS (sanitizer flags, may be empty), SOURCE, OUTPUT.
if(NOT PKG_CONFIG)
  message("tierlock-consumer: SKIPPED: pkg-config is not installed")
  return()
endif()

# Prepend our prefix; keep the system path so Abseil's .pc files are found.
if(DEFINED ENV{PKG_CONFIG_PATH} AND NOT "$ENV{PKG_CONFIG_PATH}" STREQUAL "")
  set(ENV{PKG_CONFIG_PATH} "${PKG_CONFIG_DIR}:$ENV{PKG_CONFIG_PATH}")
else()
  set(ENV{PKG_CONFIG_PATH} "${PKG_CONFIG_DIR}")
endif()

execute_process(
  COMMAND "${PKG_CONFIG}" --cflags --libs tierlock
  OUTPUT_VARIABLE pc_flags
  ERROR_VARIABLE pc_error
  RESULT_VARIABLE rc
  OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "pkg-config --cflags --libs tierlock failed (${rc}): ${pc_error}")
endif()
message(STATUS "pkg-config --cflags --libs tierlock: ${pc_flags}")
separate_arguments(pc_flags UNIX_COMMAND "${pc_flags}")
separate_arguments(extra_flags UNIX_COMMAND "${CXX_FLAGS}")

get_filename_component(out_dir "${OUTPUT}" DIRECTORY)
file(MAKE_DIRECTORY "${out_dir}")
set(compile "${CXX}" -std=c++20 ${extra_flags} "${SOURCE}" -o "${OUTPUT}" ${pc_flags})
list(JOIN compile " " compile_line)
message(STATUS "${compile_line}")
execute_process(COMMAND ${compile} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "compiling the pkg-config consumer failed (${rc})")
endif()

# A shared libtierlock is found at run time through the prefix's libdir.
get_filename_component(libdir "${PKG_CONFIG_DIR}" DIRECTORY)
if(DEFINED ENV{LD_LIBRARY_PATH} AND NOT "$ENV{LD_LIBRARY_PATH}" STREQUAL "")
  set(ENV{LD_LIBRARY_PATH} "${libdir}:$ENV{LD_LIBRARY_PATH}")
else()
  set(ENV{LD_LIBRARY_PATH} "${libdir}")
endif()
execute_process(COMMAND "${OUTPUT}" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the pkg-config consumer failed (${rc})")
endif()
