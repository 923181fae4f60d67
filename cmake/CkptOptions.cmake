# Tri-state options for optional parts: AUTO builds the part when its dependencies are
# found, ON fails the configure step when they are missing, OFF leaves the part out.
function(ckpt_tristate_option name doc)
  set(${name} AUTO CACHE STRING "${doc} (AUTO, ON, OFF)")
  set_property(CACHE ${name} PROPERTY STRINGS AUTO ON OFF)
endfunction()

# ckpt_resolve_part(<option> <found-var> <part description>) sets <option>_ENABLED.
function(ckpt_resolve_part option found what)
  if(${option} STREQUAL "OFF")
    message(STATUS "ckpt: ${what}: disabled (${option}=OFF)")
    set(${option}_ENABLED OFF PARENT_SCOPE)
  elseif(${found})
    message(STATUS "ckpt: ${what}: enabled")
    set(${option}_ENABLED ON PARENT_SCOPE)
  elseif(${option} STREQUAL "ON")
    message(FATAL_ERROR "ckpt: ${what} was requested (${option}=ON) but its dependencies were not found; run scripts/install-deps.sh")
  else()
    message(WARNING "ckpt: ${what}: compiled out, its dependencies were not found (run scripts/install-deps.sh)")
    set(${option}_ENABLED OFF PARENT_SCOPE)
  endif()
endfunction()
