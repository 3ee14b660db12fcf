# The Python binding's tests (python/tests) as the ctest test
# `python_binding`.  Included from tests/CMakeLists.txt.
#
# They run under GLOW_TEST_PYTHON (Debian's /usr/bin/python3, for which
# python3-numpy and python3-pytest provide numpy and pytest), load the
# freshly built shared library through GLOW_LIBRARY, and write only under
# the build tree.  The test is left out, with a STATUS message, when that
# interpreter lacks numpy or pytest, and in sanitizer builds, where the
# library cannot be loaded into an interpreter that was not started with the
# sanitizer runtime.

set(GLOW_TEST_PYTHON "/usr/bin/python3" CACHE FILEPATH
    "Python interpreter (with numpy and pytest) for the binding's tests")

function(glow_add_python_test)
  if(GLOW_SANITIZE)
    message(STATUS "python_binding test: skipped in sanitizer builds")
    return()
  endif()
  if(NOT EXISTS "${GLOW_TEST_PYTHON}")
    message(STATUS "python_binding test: skipped, ${GLOW_TEST_PYTHON} not found")
    return()
  endif()
  execute_process(
    COMMAND "${GLOW_TEST_PYTHON}" -c "import numpy, pytest"
    RESULT_VARIABLE missing
    OUTPUT_QUIET ERROR_QUIET)
  if(NOT missing EQUAL 0)
    message(STATUS "python_binding test: skipped, ${GLOW_TEST_PYTHON} lacks "
                   "numpy or pytest (Debian: python3-numpy python3-pytest)")
    return()
  endif()
  set(basetemp "${CMAKE_CURRENT_BINARY_DIR}/python-tmp")
  add_test(NAME python_binding
    COMMAND "${GLOW_TEST_PYTHON}" -m pytest -q -p no:cacheprovider
            "--basetemp=${basetemp}" "${PROJECT_SOURCE_DIR}/python/tests")
  set_tests_properties(python_binding PROPERTIES
    TIMEOUT 120
    ENVIRONMENT "GLOW_LIBRARY=$<TARGET_FILE:glow>;PYTHONPATH=${PROJECT_SOURCE_DIR}/python;PYTHONDONTWRITEBYTECODE=1")
  message(STATUS "python_binding test: ${GLOW_TEST_PYTHON} with numpy and pytest")
endfunction()

glow_add_python_test()
