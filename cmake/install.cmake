# cmake/install.cmake — install rules for tierlock (included when TIERLOCK_INSTALL is ON).
#
# Installs, under CMAKE_INSTALL_PREFIX (or `cmake --install <build> --prefix P`):
#   <libdir>/libtierlock.{a,so}                  the library (type follows BUILD_SHARED_LIBS;
#                                                a Debug build is libtierlockd: both variants
#                                                install into one prefix, and find_package
#                                                picks the one matching the consumer's
#                                                configuration; tierlock.pc names the
#                                                variant installed last)
#   <includedir>/tierlock/*.h                    the public headers (lease*.h only
#                                                for the lease libraries built)
#   <libdir>/cmake/tierlock/tierlock{Config,ConfigVersion,Targets}.cmake
#                                                for find_package(tierlock) -> tierlock::tierlock
#   <libdir>/pkgconfig/tierlock.pc               for pkg-config
#   <libdir>/libtierlock_lease*.{a,so}, tierlock_lease*Targets.cmake
#                                                the lease components, when built
#                                                (Debug: the same names ending in d)
#   <bindir>/tierlock, tierlock-lease            the CLI, once tools/ defines tierlock_cli
# Every installed file locates the others relative to itself, so the tree can be
# installed to, or moved to, any prefix.
#
# Sanitizer builds (TIERLOCK_SANITIZE) install an instrumented library but do not
# export the -fsanitize flags (they live on the build-only tierlock_warnings target):
# whoever links it must pass the same -fsanitize flags. The consumer tests do.

include(CMakePackageConfigHelpers)

set(TIERLOCK_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/tierlock"
    CACHE STRING "Where tierlockConfig.cmake is installed, relative to the prefix")
mark_as_advanced(TIERLOCK_INSTALL_CMAKEDIR)

install(TARGETS tierlock
  EXPORT tierlockTargets
  RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}" COMPONENT tierlock_runtime
  LIBRARY DESTINATION "${CMAKE_INSTALL_LIBDIR}" COMPONENT tierlock_runtime
          NAMELINK_COMPONENT tierlock_development
  ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}" COMPONENT tierlock_development
  INCLUDES DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")

# A lease header is installed only with its library: an installed header
# promises a library to link.
set(_tl_header_excludes "")
foreach(_tl_c IN ITEMS lease lease_memory lease_postgres lease_sqlite lease_redis lease_etcd)
  set(_tl_c_target tierlock_${_tl_c})
  if(_tl_c STREQUAL "lease_memory")
    set(_tl_c_target tierlock_lease)  # the in-memory backend is part of the front
  endif()
  if(NOT TARGET ${_tl_c_target})
    list(APPEND _tl_header_excludes PATTERN "${_tl_c}.h" EXCLUDE)
  endif()
endforeach()
install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/tierlock"
  DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}"
  COMPONENT tierlock_development
  FILES_MATCHING PATTERN "*.h" ${_tl_header_excludes})

install(EXPORT tierlockTargets
  NAMESPACE tierlock::
  DESTINATION "${TIERLOCK_INSTALL_CMAKEDIR}"
  COMPONENT tierlock_development)

configure_package_config_file(
  "${CMAKE_CURRENT_LIST_DIR}/tierlockConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/tierlockConfig.cmake"
  INSTALL_DESTINATION "${TIERLOCK_INSTALL_CMAKEDIR}")
write_basic_package_version_file(
  "${PROJECT_BINARY_DIR}/tierlockConfigVersion.cmake"
  VERSION "${PROJECT_VERSION}"
  # Before 1.0 every minor version may break the API: 0.1 must not satisfy
  # a request for 0.2 (or the reverse).
  COMPATIBILITY SameMinorVersion)
install(FILES
    "${PROJECT_BINARY_DIR}/tierlockConfig.cmake"
    "${PROJECT_BINARY_DIR}/tierlockConfigVersion.cmake"
  DESTINATION "${TIERLOCK_INSTALL_CMAKEDIR}"
  COMPONENT tierlock_development)

# --- leases: optional components --------------------------------------------
# find_package(tierlock COMPONENTS lease lease_postgres lease_sqlite lease_redis lease_etcd)
# -> tierlock::lease, tierlock::lease_postgres, ... Each is its own export set
# and targets file, installed only when it was built, so a consumer that asks
# for none of them needs no database client (tierlockConfig.cmake finds the
# client library of a backend only when that component is requested).
foreach(_tl_c IN ITEMS lease lease_postgres lease_sqlite lease_redis lease_etcd)
  if(TARGET tierlock_${_tl_c})
    install(TARGETS tierlock_${_tl_c}
      EXPORT tierlock_${_tl_c}Targets
      LIBRARY DESTINATION "${CMAKE_INSTALL_LIBDIR}" COMPONENT tierlock_runtime
              NAMELINK_COMPONENT tierlock_development
      ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}" COMPONENT tierlock_development
      INCLUDES DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
    install(EXPORT tierlock_${_tl_c}Targets
      NAMESPACE tierlock::
      DESTINATION "${TIERLOCK_INSTALL_CMAKEDIR}"
      COMPONENT tierlock_development)
  endif()
endforeach()

# --- pkg-config -------------------------------------------------------------
# Abseil modules come from the target's own link libraries (absl::foo -> absl_foo),
# so the .pc cannot drift from src/CMakeLists.txt. Public ones go to Requires. The
# private ones go to Requires.private for a shared library, but to Requires for a
# static one: `pkg-config --libs` (without --static) must still name every Abseil
# library that libtierlock.a needs.
get_target_property(_tl_public_libs tierlock INTERFACE_LINK_LIBRARIES)
get_target_property(_tl_all_libs tierlock LINK_LIBRARIES)
set(_tl_pc_public "")
set(_tl_pc_private "")
foreach(_lib IN LISTS _tl_public_libs)
  if(_lib MATCHES "^absl::([A-Za-z0-9_]+)$")
    list(APPEND _tl_pc_public "absl_${CMAKE_MATCH_1}")
  endif()
endforeach()
foreach(_lib IN LISTS _tl_all_libs)
  if(_lib MATCHES "^absl::([A-Za-z0-9_]+)$")
    list(APPEND _tl_pc_private "absl_${CMAKE_MATCH_1}")
  endif()
endforeach()
list(REMOVE_DUPLICATES _tl_pc_public)
list(REMOVE_DUPLICATES _tl_pc_private)
if(_tl_pc_public)
  list(REMOVE_ITEM _tl_pc_private ${_tl_pc_public})
endif()
get_target_property(_tl_type tierlock TYPE)
if(_tl_type STREQUAL "STATIC_LIBRARY")
  list(APPEND _tl_pc_public ${_tl_pc_private})
  set(_tl_pc_private "")
endif()
list(JOIN _tl_pc_public " " _tl_pc_public)
list(JOIN _tl_pc_private " " _tl_pc_private)
set(TIERLOCK_PC_REQUIRES "Requires: ${_tl_pc_public}")
set(TIERLOCK_PC_REQUIRES_PRIVATE "")
if(_tl_pc_private)
  set(TIERLOCK_PC_REQUIRES_PRIVATE "\nRequires.private: ${_tl_pc_private}")
endif()

# Relocatable paths: prefix is found from the .pc file's own directory.
set(_tl_pc_dir "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
if(IS_ABSOLUTE "${_tl_pc_dir}")
  set(TIERLOCK_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
else()
  file(RELATIVE_PATH _tl_pc_up "/__prefix__/${_tl_pc_dir}" "/__prefix__")
  string(REGEX REPLACE "/$" "" _tl_pc_up "${_tl_pc_up}")
  set(TIERLOCK_PC_PREFIX "\${pcfiledir}/${_tl_pc_up}")
endif()
foreach(_kind IN ITEMS LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${_kind}}")
    set(TIERLOCK_PC_${_kind} "${CMAKE_INSTALL_${_kind}}")
  else()
    set(TIERLOCK_PC_${_kind} "\${prefix}/${CMAKE_INSTALL_${_kind}}")
  endif()
endforeach()
if(CMAKE_BUILD_TYPE STREQUAL "Debug")
  set(TIERLOCK_PC_LIBNAME "tierlockd")
else()
  set(TIERLOCK_PC_LIBNAME "tierlock")
endif()
configure_file("${CMAKE_CURRENT_LIST_DIR}/tierlock.pc.in"
               "${PROJECT_BINARY_DIR}/tierlock.pc" @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/tierlock.pc"
  DESTINATION "${_tl_pc_dir}"
  COMPONENT tierlock_development)

# --- the CLI (tools/tierlock), once it exists -------------------------------
# tools/ must be added before this file is included for the target to be seen.
if(TARGET tierlock_cli)
  install(TARGETS tierlock_cli
    RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}" COMPONENT tierlock_runtime)
endif()
# tierlock-lease: `tierlock run --backend` execs it from tierlock's directory.
if(TARGET tierlock_lease_cli)
  install(TARGETS tierlock_lease_cli
    RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}" COMPONENT tierlock_runtime)
endif()
