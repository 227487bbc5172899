# The Wine fixture of the Windows tests (tests/win32/win32.cmake), run with
# cmake -P. ACTION=start: start a wineserver that outlives each test process
# (-p: persistent until killed, so every test does not pay for a new server)
# and initialise the prefix (wineboot, once: seconds). ACTION=stop: end it.
# WINEPREFIX and WINEDEBUG come from the test's environment.
if(ACTION STREQUAL "start")
  file(MAKE_DIRECTORY "$ENV{WINEPREFIX}")
  # Output to a file, not a pipe: the server (and what wineboot starts)
  # outlive this script, and would hold a pipe open until they exit.
  set(log "$ENV{WINEPREFIX}/fixture.log")
  execute_process(COMMAND "${WINESERVER}" -p RESULT_VARIABLE rc
                  OUTPUT_FILE "${log}" ERROR_FILE "${log}")
  execute_process(COMMAND "${WINE}" wineboot -i RESULT_VARIABLE rc
                  OUTPUT_FILE "${log}" ERROR_FILE "${log}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "wineboot -i failed (${rc}) for $ENV{WINEPREFIX}")
  endif()
  message(STATUS "wine prefix ready: $ENV{WINEPREFIX}")
elseif(ACTION STREQUAL "stop")
  set(log "$ENV{WINEPREFIX}/fixture.log")
  execute_process(COMMAND "${WINESERVER}" -k RESULT_VARIABLE rc
                  OUTPUT_FILE "${log}" ERROR_FILE "${log}")
  # Wait for it to be gone, so the build dir can be removed afterwards.
  execute_process(COMMAND "${WINESERVER}" -w
                  OUTPUT_FILE "${log}" ERROR_FILE "${log}")
else()
  message(FATAL_ERROR "ACTION must be start or stop")
endif()
