# cmake/packaging.cmake — Debian packages with CPack (included after
# install.cmake at top level). In a configured build directory:
#   cpack -G DEB               (or: cpack --preset package, for build/package)
# makes, from install.cmake's components:
#   tierlock_<version>_<arch>.deb         tierlock_runtime: the command
#                                         (tierlock, tierlock-lease), its manual
#                                         and shell completions, shared libraries
#   libtierlock-dev_<version>_<arch>.deb  tierlock_development: headers, the
#                                         libraries, CMake package, pkg-config
# Installed under /usr. Runtime dependencies come from dpkg-shlibdeps (the
# command links Abseil and libstdc++ statically, tierlock-lease the database
# clients dynamically); the -dev package depends on libabsl-dev, which
# tierlockConfig.cmake and tierlock.pc need, and only suggests the lease
# backends' client -dev packages: find_package finds a lease component only
# when its client library is there.
set(TIERLOCK_PACKAGE_CONTACT "tierlock maintainers <maintainers@tierlock.invalid>"
    CACHE STRING "The Debian packages' Maintainer field")
mark_as_advanced(TIERLOCK_PACKAGE_CONTACT)

set(CPACK_PACKAGE_NAME tierlock)
set(CPACK_PACKAGE_VENDOR tierlock)
set(CPACK_PACKAGE_CONTACT "${TIERLOCK_PACKAGE_CONTACT}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${PROJECT_DESCRIPTION}")
set(CPACK_PACKAGE_VERSION "${PROJECT_VERSION}")
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)

set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL tierlock_runtime tierlock_development)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)

set(CPACK_DEBIAN_TIERLOCK_RUNTIME_PACKAGE_NAME tierlock)
set(CPACK_DEBIAN_TIERLOCK_RUNTIME_PACKAGE_SECTION utils)
set(CPACK_COMPONENT_TIERLOCK_RUNTIME_DESCRIPTION
    "run a command under a directory lock, or show who holds one
 tierlock run locks a directory (the file DIR/.lock, held with flock(2): the
 same lock as flock(1) and Python's filelock), runs a command while holding
 it and names the holder while waiting; tierlock status shows who holds a
 lock. With --backend it holds a lease through PostgreSQL, Redis, SQLite or
 etcd instead.")

set(CPACK_DEBIAN_TIERLOCK_DEVELOPMENT_PACKAGE_NAME libtierlock-dev)
set(CPACK_DEBIAN_TIERLOCK_DEVELOPMENT_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_TIERLOCK_DEVELOPMENT_PACKAGE_DEPENDS "libabsl-dev")
set(CPACK_DEBIAN_TIERLOCK_DEVELOPMENT_PACKAGE_SUGGESTS
    "libpq-dev, libsqlite3-dev, libhiredis-dev, libcurl4-openssl-dev, pkg-config")
set(CPACK_COMPONENT_TIERLOCK_DEVELOPMENT_DESCRIPTION
    "C++20 library for cross-process directory locks (development files)
 Directory locks against other processes and threads, with tier (lock-order)
 checks, holder records and leases through shared services. Headers, static
 libraries, the CMake package (find_package(tierlock)) and pkg-config files.")
# A shared-library build puts the libraries in the runtime package.
if(BUILD_SHARED_LIBS)
  set(CPACK_DEBIAN_ENABLE_COMPONENT_DEPENDS ON)
  set(CPACK_COMPONENT_TIERLOCK_DEVELOPMENT_DEPENDS tierlock_runtime)
endif()

include(CPack)
