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
  set(env "GLOW_LIBRARY=$<TARGET_FILE:glow>;PYTHONPATH=${PROJECT_SOURCE_DIR}/python;PYTHONDONTWRITEBYTECODE=1")
  add_test(NAME python_binding
    COMMAND "${GLOW_TEST_PYTHON}" -m pytest -q -p no:cacheprovider -m "not torch"
            "--basetemp=${basetemp}" "${PROJECT_SOURCE_DIR}/python/tests")
  set_tests_properties(python_binding PROPERTIES TIMEOUT 120 ENVIRONMENT "${env}")
  message(STATUS "python_binding test: ${GLOW_TEST_PYTHON} with numpy and pytest")
  glow_add_python_torch_tests("${env}")
endfunction()

# TRUE in ${out} when GLOW_TEST_PYTHON can `import ${modules}`; otherwise
# FALSE, and a STATUS message that `what` is skipped.
function(glow_python_imports out modules what debian)
  execute_process(COMMAND "${GLOW_TEST_PYTHON}" -c "import ${modules}"
    RESULT_VARIABLE missing OUTPUT_QUIET ERROR_QUIET)
  if(missing EQUAL 0)
    set(${out} TRUE PARENT_SCOPE)
  else()
    set(${out} FALSE PARENT_SCOPE)
    message(STATUS "${what}: skipped, ${GLOW_TEST_PYTHON} lacks ${modules} (Debian: ${debian})")
  endif()
endfunction()

# glow.torch against the library (python_torch: the tests marked `torch`),
# the PyTorch example end to end (examples_python), and the package
# installed by pip (python_installed: the whole suite against it).  Each is
# left out, with a STATUS message, when what it needs is missing.
function(glow_add_python_torch_tests env)
  set(src "${PROJECT_SOURCE_DIR}")
  glow_python_imports(have_torch "torch" "python_torch, examples_python tests" python3-torch)
  if(have_torch)
    add_test(NAME python_torch
      COMMAND "${GLOW_TEST_PYTHON}" -m pytest -q -p no:cacheprovider -m torch
              "--basetemp=${CMAKE_CURRENT_BINARY_DIR}/python-torch-tmp" "${src}/python/tests")
    set_tests_properties(python_torch PROPERTIES TIMEOUT 180 ENVIRONMENT "${env}")
    set(data /usr/share/datasets/fashion-mnist)
    if(TARGET train AND TARGET sample AND EXISTS "${data}/train-images-idx3-ubyte.gz")
      add_test(NAME examples_python
        COMMAND "${CMAKE_CURRENT_SOURCE_DIR}/examples_python.sh" "${GLOW_TEST_PYTHON}"
                "${PROJECT_BINARY_DIR}/examples" "${src}" "${data}")
      set_tests_properties(examples_python PROPERTIES TIMEOUT 180 ENVIRONMENT "${env}")
    else()
      message(STATUS "examples_python test: skipped, needs the train and sample "
                     "examples and ${data} (Debian: dataset-fashion-mnist)")
    endif()
  endif()
  # setuptools before pip: Debian's pip imported first upsets setuptools'
  # distutils shim.
  glow_python_imports(have_pip "setuptools, wheel, pip" "python_installed test"
                      "python3-setuptools python3-wheel python3-pip")
  if(have_pip)
    add_test(NAME python_installed
      COMMAND "${CMAKE_CURRENT_SOURCE_DIR}/python_install.sh" "${GLOW_TEST_PYTHON}"
              "${PROJECT_BINARY_DIR}" "${src}")
    set_tests_properties(python_installed PROPERTIES TIMEOUT 300)
  endif()
endfunction()

glow_add_python_test()
