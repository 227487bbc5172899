# cmake/install.cmake — install rules for tierlock (included when TIERLOCK_INSTALL is ON).
#
# Installs, under CMAKE_INSTALL_PREFIX (or `cmake --install <build> --prefix P`):
#   <libdir>/libtierlock.{a,so}                  the library (type follows BUILD_SHARED_LIBS;
#                                                a Debug build is libtierlockd: both variants
#                                                install into one prefix, and find_package
#                                                picks the one matching the consumer's
#                                                configuration)
#   <includedir>/tierlock/*.h                    the public headers (lease*.h only
#                                                for the lease libraries built)
#   <libdir>/cmake/tierlock/tierlock{Config,ConfigVersion,Targets}.cmake
#                                                for find_package(tierlock) -> tierlock::tierlock
#   <libdir>/pkgconfig/tierlock.pc               for pkg-config (Debug: tierlockd.pc;
#                                                see "pkg-config" below)
#   <libdir>/libtierlock_lease*.{a,so}, tierlock_lease*Targets.cmake,
#   <libdir>/pkgconfig/tierlock_lease*.pc        the lease components, when built
#                                                (Debug: the same names ending in d)
#   <bindir>/tierlock, tierlock-lease            the CLI, once tools/ defines tierlock_cli,
#   <mandir>/man1/tierlock.1                     with its manual (docs/man/) and
#   <datadir>/bash-completion/completions/tierlock, <datadir>/zsh/vendor-completions/_tierlock,
#   <datadir>/fish/vendor_completions.d/tierlock.fish
#                                                shell completions (completions/)
# Components: tierlock_runtime (the command, its manual and completions, shared
# libraries) and tierlock_development (the rest); cmake/packaging.cmake makes
# the Debian packages tierlock and libtierlock-dev of them.
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
# One .pc file per library, named after it: tierlock.pc, tierlock_lease.pc,
# tierlock_lease_postgres.pc, ... A Debug build's libraries end in d, and so do
# their .pc files (tierlockd.pc names -ltierlockd), so a Debug and a Release
# install share one prefix. The unsuffixed name is the Release library's; a
# Debug install writes it too only while no Release one is there (a
# Debug-only prefix still answers `pkg-config tierlock`), and a Release install
# replaces it.
#
# Requires come from the target's own link libraries (absl::foo -> absl_foo,
# the client libraries' own .pc names), so a .pc cannot drift from
# src/CMakeLists.txt. Public ones go to Requires. The private ones go to
# Requires.private for a shared library, but to Requires for a static one:
# `pkg-config --libs` (without --static) must still name every library that
# the archive needs.
set(_tl_pc_postfix "")
if(CMAKE_BUILD_TYPE STREQUAL "Debug")
  set(_tl_pc_postfix "d")
endif()

# The pkg-config module of one link item, or "" for none (build-only items).
function(_tl_pc_module out item)
  set(module "")
  if(item MATCHES "^absl::([A-Za-z0-9_]+)$")
    set(module "absl_${CMAKE_MATCH_1}")
  elseif(item STREQUAL "tierlock::tierlock" OR item STREQUAL "tierlock")
    set(module "tierlock${_tl_pc_postfix}")
  elseif(item MATCHES "^tierlock::(lease[a-z_]*)$")
    set(module "tierlock_${CMAKE_MATCH_1}${_tl_pc_postfix}")
  elseif(item STREQUAL "PostgreSQL::PostgreSQL")
    set(module "libpq")
  elseif(item STREQUAL "SQLite::SQLite3")
    set(module "sqlite3")
  elseif(item STREQUAL "PkgConfig::TIERLOCK_HIREDIS")
    set(module "hiredis")
  elseif(item STREQUAL "CURL::libcurl")
    set(module "libcurl")
  endif()
  set(${out} "${module}" PARENT_SCOPE)
endfunction()

# Relocatable paths: prefix is found from the .pc file's own directory.
set(_tl_pc_dir "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
if(IS_ABSOLUTE "${_tl_pc_dir}")
  set(TIERLOCK_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
  set(_tl_pc_dest "${_tl_pc_dir}")
else()
  file(RELATIVE_PATH _tl_pc_up "/__prefix__/${_tl_pc_dir}" "/__prefix__")
  string(REGEX REPLACE "/$" "" _tl_pc_up "${_tl_pc_up}")
  set(TIERLOCK_PC_PREFIX "\${pcfiledir}/${_tl_pc_up}")
  set(_tl_pc_dest "\${CMAKE_INSTALL_PREFIX}/${_tl_pc_dir}")
endif()
foreach(_kind IN ITEMS LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${_kind}}")
    set(TIERLOCK_PC_${_kind} "${CMAKE_INSTALL_${_kind}}")
  else()
    set(TIERLOCK_PC_${_kind} "\${prefix}/${CMAKE_INSTALL_${_kind}}")
  endif()
endforeach()

# _tl_install_pc(TARGET NAME DESCRIPTION): writes and installs NAME<postfix>.pc
# for TARGET (and, from a Debug build, NAME.pc while no Release one exists).
function(_tl_install_pc target name description)
  get_target_property(public_libs ${target} INTERFACE_LINK_LIBRARIES)
  get_target_property(all_libs ${target} LINK_LIBRARIES)
  set(pc_public "")
  set(pc_private "")
  foreach(lib IN LISTS public_libs)
    _tl_pc_module(module "${lib}")
    if(module)
      list(APPEND pc_public "${module}")
    endif()
  endforeach()
  foreach(lib IN LISTS all_libs)
    _tl_pc_module(module "${lib}")
    if(module)
      list(APPEND pc_private "${module}")
    endif()
  endforeach()
  list(REMOVE_DUPLICATES pc_public)
  list(REMOVE_DUPLICATES pc_private)
  if(pc_public)
    list(REMOVE_ITEM pc_private ${pc_public})
  endif()
  get_target_property(type ${target} TYPE)
  if(type STREQUAL "STATIC_LIBRARY")
    list(APPEND pc_public ${pc_private})
    set(pc_private "")
  endif()
  list(JOIN pc_public " " pc_public)
  list(JOIN pc_private " " pc_private)
  set(TIERLOCK_PC_NAME "${name}")
  set(TIERLOCK_PC_DESCRIPTION "${description}")
  set(TIERLOCK_PC_REQUIRES "Requires: ${pc_public}")
  set(TIERLOCK_PC_REQUIRES_PRIVATE "")
  if(pc_private)
    set(TIERLOCK_PC_REQUIRES_PRIVATE "\nRequires.private: ${pc_private}")
  endif()
  get_target_property(output_name ${target} OUTPUT_NAME)
  if(NOT output_name)
    set(output_name ${target})
  endif()
  set(TIERLOCK_PC_LIBNAME "${output_name}${_tl_pc_postfix}")
  set(pc "${PROJECT_BINARY_DIR}/pkgconfig/${name}${_tl_pc_postfix}.pc")
  configure_file("${PROJECT_SOURCE_DIR}/cmake/tierlock.pc.in" "${pc}" @ONLY)
  install(FILES "${pc}" DESTINATION "${_tl_pc_dir}" COMPONENT tierlock_development)
  if(_tl_pc_postfix)
    # The fallback copy is marked, so a later Debug install knows it may
    # rewrite it and a Release install's is never touched.
    set(fallback "${PROJECT_BINARY_DIR}/pkgconfig/fallback/${name}.pc")
    file(READ "${pc}" content)
    file(WRITE "${fallback}"
         "# tierlock: Debug build (a Release install replaces this file)\n${content}")
    install(CODE "
      set(_tl_pc \"\$ENV{DESTDIR}${_tl_pc_dest}/${name}.pc\")
      set(_tl_pc_is_fallback FALSE)
      if(EXISTS \"\${_tl_pc}\")
        file(STRINGS \"\${_tl_pc}\" _tl_pc_marker LIMIT_COUNT 1)
        if(_tl_pc_marker MATCHES \"^# tierlock: Debug build\")
          set(_tl_pc_is_fallback TRUE)
        endif()
      endif()
      if(NOT EXISTS \"\${_tl_pc}\" OR _tl_pc_is_fallback)
        file(INSTALL DESTINATION \"${_tl_pc_dest}\" TYPE FILE FILES \"${fallback}\")
      else()
        message(STATUS \"Keeping (a Release build's): \${_tl_pc}\")
      endif()"
      COMPONENT tierlock_development)
  endif()
endfunction()

_tl_install_pc(tierlock tierlock "${PROJECT_DESCRIPTION}")
foreach(_tl_c IN ITEMS lease lease_postgres lease_sqlite lease_redis lease_etcd)
  if(TARGET tierlock_${_tl_c})
    _tl_install_pc(tierlock_${_tl_c} tierlock_${_tl_c} "tierlock ${_tl_c}: leases through a shared service (docs/leases.md)")
  endif()
endforeach()

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
# Its manual and shell completions, at the paths each shell reads from a
# vendor package (zsh: Debian's vendor-completions, on zsh's default fpath).
if(TARGET tierlock_cli)
  install(FILES "${PROJECT_SOURCE_DIR}/docs/man/tierlock.1"
    DESTINATION "${CMAKE_INSTALL_MANDIR}/man1" COMPONENT tierlock_runtime)
  install(FILES "${PROJECT_SOURCE_DIR}/completions/tierlock.bash"
    DESTINATION "${CMAKE_INSTALL_DATADIR}/bash-completion/completions"
    RENAME tierlock COMPONENT tierlock_runtime)
  install(FILES "${PROJECT_SOURCE_DIR}/completions/_tierlock"
    DESTINATION "${CMAKE_INSTALL_DATADIR}/zsh/vendor-completions"
    COMPONENT tierlock_runtime)
  install(FILES "${PROJECT_SOURCE_DIR}/completions/tierlock.fish"
    DESTINATION "${CMAKE_INSTALL_DATADIR}/fish/vendor_completions.d"
    COMPONENT tierlock_runtime)
endif()
