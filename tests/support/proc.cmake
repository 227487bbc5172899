# tests/support/proc.cmake - included by tests/CMakeLists.txt and
# bench/CMakeLists.txt (whichever comes first defines it).
#
#   tierlock_test_proc  the /proc readers (support/proc.h): one copy for the
#                       tests' support and the benchmarks. No GoogleTest.
include_guard(GLOBAL)
add_library(tierlock_test_proc STATIC ${CMAKE_CURRENT_LIST_DIR}/proc.cc)
target_include_directories(tierlock_test_proc PUBLIC ${CMAKE_CURRENT_LIST_DIR}/..)
target_compile_features(tierlock_test_proc PUBLIC cxx_std_20)
set_target_properties(tierlock_test_proc PROPERTIES CXX_EXTENSIONS OFF)
target_link_libraries(tierlock_test_proc PRIVATE tierlock_warnings)
