# FindSlurm: the Slurm headers (slurm/spank.h) and libslurm.
# Debian ships no pkg-config file for Slurm, hence this module.
# Defines Slurm_FOUND, Slurm_INCLUDE_DIR, Slurm_LIBRARY, Slurm_VERSION and the
# imported targets Slurm::spank (headers only: SPANK plugins are resolved by
# slurmstepd at load time) and Slurm::slurm (libslurm).
find_path(Slurm_INCLUDE_DIR NAMES slurm/spank.h)
find_library(Slurm_LIBRARY NAMES slurm)

if(Slurm_INCLUDE_DIR AND EXISTS "${Slurm_INCLUDE_DIR}/slurm/slurm_version.h")
  file(STRINGS "${Slurm_INCLUDE_DIR}/slurm/slurm_version.h" _slurm_ver
       REGEX "^#define SLURM_VERSION_NUMBER")
  string(REGEX REPLACE ".*0x([0-9a-fA-F][0-9a-fA-F])([0-9a-fA-F][0-9a-fA-F])([0-9a-fA-F][0-9a-fA-F]).*"
         "\\1;\\2;\\3" _slurm_parts "${_slurm_ver}")
  set(Slurm_VERSION "")
  foreach(_p IN LISTS _slurm_parts)
    math(EXPR _d "0x${_p}")
    string(APPEND Slurm_VERSION "${_d}.")
  endforeach()
  string(REGEX REPLACE "\\.$" "" Slurm_VERSION "${Slurm_VERSION}")
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(Slurm
  REQUIRED_VARS Slurm_INCLUDE_DIR Slurm_LIBRARY
  VERSION_VAR Slurm_VERSION)

if(Slurm_FOUND)
  if(NOT TARGET Slurm::spank)
    add_library(Slurm::spank INTERFACE IMPORTED)
    set_target_properties(Slurm::spank PROPERTIES
      INTERFACE_INCLUDE_DIRECTORIES "${Slurm_INCLUDE_DIR}")
  endif()
  if(NOT TARGET Slurm::slurm)
    add_library(Slurm::slurm UNKNOWN IMPORTED)
    set_target_properties(Slurm::slurm PROPERTIES
      IMPORTED_LOCATION "${Slurm_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${Slurm_INCLUDE_DIR}")
  endif()
endif()
mark_as_advanced(Slurm_INCLUDE_DIR Slurm_LIBRARY)
