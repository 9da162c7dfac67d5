# detops_core: turns a detops package's sources into `lib<package>_ops.so` (plain shared
# library: op schemas and CPU kernels, linked only against libtorch_cpu, no Python, so a C++
# program can dlopen it), `_C` (thin pybind11 module linking it through the rpath $ORIGIN;
# importing it loads the ops) and `_C_cuda.so` (CUDA kernels, shared cudart), all on the
# LibTorch stable ABI so one build loads on torch 2.11 and newer.
#
#   find_package(detops_core CONFIG REQUIRED)
#   detops_add_extension(PACKAGE detops_nms
#     CPU_SOURCES    csrc/nms_schema.cpp csrc/cpu/nms_kernel.cpp
#     CUDA_SOURCES   csrc/cuda/nms_kernel.cu
#     INCLUDE_DIRS   csrc)
include_guard(GLOBAL)

get_filename_component(DETOPS_CORE_INCLUDE_DIR "${CMAKE_CURRENT_LIST_DIR}/../include" ABSOLUTE)
# The pybind11 module body (build_info) every package shares.
get_filename_component(DETOPS_CORE_MODULE_SOURCE "${CMAKE_CURRENT_LIST_DIR}/../csrc/extension_module.cpp" ABSOLUTE)
# The build-info function every ops library exports.
get_filename_component(DETOPS_CORE_OPS_INFO_SOURCE "${CMAKE_CURRENT_LIST_DIR}/../csrc/ops_library.cpp" ABSOLUTE)

# Oldest torch the binaries must load on (2.11); stable-ABI headers hide anything newer.
# A plain variable, not a cache entry: it shadows the value an existing build folder cached
# under an older default, and every package must target the same torch.
set(DETOPS_TORCH_TARGET_VERSION "0x020b000000000000")

macro(_detops_setting name default)
  if(NOT DEFINED ${name})
    if(DEFINED ENV{${name}} AND NOT "$ENV{${name}}" STREQUAL "")
      set(${name} "$ENV{${name}}")
    else()
      set(${name} "${default}")
    endif()
  endif()
endmacro()
_detops_setting(DETOPS_CUDA AUTO)
_detops_setting(DETOPS_CUDA_EMULATION OFF)
_detops_setting(DETOPS_CUDA_ARCHS "75-real;80-real;86-real;89-real;90-real;100-real;120")
string(TOUPPER "${DETOPS_CUDA}" DETOPS_CUDA)

find_package(Python 3.10 REQUIRED COMPONENTS Interpreter Development.Module)
find_package(pybind11 CONFIG REQUIRED)

# find_package(Torch) would pull in libtorch_cuda and guess CUDA settings; stable-ABI code
# needs only torch's headers and libtorch_cpu, so ask the interpreter where torch lives.
execute_process(
  COMMAND "${Python_EXECUTABLE}" -c
          "import os, torch; print(os.path.dirname(torch.__file__)); print(torch.version.cuda or '')"
  OUTPUT_VARIABLE _detops_torch_info
  RESULT_VARIABLE _detops_torch_rc
  OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT _detops_torch_rc EQUAL 0)
  message(FATAL_ERROR "detops: `import torch` failed in ${Python_EXECUTABLE}; install torch first "
                      "and build with --no-build-isolation")
endif()
string(REPLACE "\n" ";" _detops_torch_info "${_detops_torch_info}")
list(GET _detops_torch_info 0 DETOPS_TORCH_DIR)
list(LENGTH _detops_torch_info _detops_n)
set(DETOPS_TORCH_CUDA "")
if(_detops_n GREATER 1)
  list(GET _detops_torch_info 1 DETOPS_TORCH_CUDA)
endif()
find_library(DETOPS_TORCH_CPU_LIBRARY torch_cpu PATHS "${DETOPS_TORCH_DIR}/lib" NO_DEFAULT_PATH REQUIRED)

set(DETOPS_BUILD_CUDA OFF)
if(DETOPS_CUDA STREQUAL "ON" OR (DETOPS_CUDA STREQUAL "AUTO" AND NOT DETOPS_TORCH_CUDA STREQUAL ""))
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    # The current-stream getter the kernels need (detops/cuda_launch.cuh) is exported by
    # libtorch_cuda only; _C_cuda is loaded only under a CUDA torch, where it is loaded.
    find_library(DETOPS_TORCH_CUDA_LIBRARY torch_cuda PATHS "${DETOPS_TORCH_DIR}/lib" NO_DEFAULT_PATH)
    if(NOT DETOPS_TORCH_CUDA_LIBRARY)
      message(FATAL_ERROR "detops: CUDA kernels need a CUDA build of torch (no libtorch_cuda in "
                          "${DETOPS_TORCH_DIR}/lib); set DETOPS_CUDA=OFF for CPU kernels only")
    endif()
    set(CMAKE_CUDA_ARCHITECTURES "${DETOPS_CUDA_ARCHS}")
    enable_language(CUDA)
    set(DETOPS_BUILD_CUDA ON)
  elseif(DETOPS_CUDA STREQUAL "ON")
    message(FATAL_ERROR "detops: DETOPS_CUDA=ON but no CUDA compiler (nvcc) was found")
  else()
    message(STATUS "detops: torch is a CUDA build but nvcc was not found: CPU kernels only")
  endif()
elseif(NOT DETOPS_CUDA MATCHES "^(AUTO|OFF)$")
  message(FATAL_ERROR "detops: DETOPS_CUDA must be AUTO, ON or OFF, got '${DETOPS_CUDA}'")
endif()
message(STATUS "detops: torch in ${DETOPS_TORCH_DIR} (CUDA '${DETOPS_TORCH_CUDA}'), "
               "CUDA kernels: ${DETOPS_BUILD_CUDA} (archs ${DETOPS_CUDA_ARCHS})")

# Everything a stable-ABI target needs: headers, target version, link to libtorch_cpu.
function(_detops_stable_abi target)
  target_include_directories(${target} SYSTEM PRIVATE "${DETOPS_TORCH_DIR}/include")
  target_include_directories(${target} PRIVATE "${DETOPS_CORE_INCLUDE_DIR}")
  target_compile_definitions(${target} PRIVATE TORCH_TARGET_VERSION=${DETOPS_TORCH_TARGET_VERSION})
  target_compile_features(${target} PRIVATE cxx_std_17)
  set_target_properties(${target} PROPERTIES CXX_VISIBILITY_PRESET hidden CUDA_VISIBILITY_PRESET hidden
                                             VISIBILITY_INLINES_HIDDEN ON)
  # No fused multiply-add contraction: results must not depend on the compiler's mood, and
  # the CPU kernels must round exactly like the reference implementations they mirror.
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-ffp-contract=off -Wall -Wextra>)
  target_link_libraries(${target} PRIVATE "${DETOPS_TORCH_CPU_LIBRARY}")
endfunction()

include("${CMAKE_CURRENT_LIST_DIR}/detops_emulation.cmake")

function(detops_add_extension)
  cmake_parse_arguments(ARG "" "PACKAGE" "CPU_SOURCES;CUDA_SOURCES;INCLUDE_DIRS" ${ARGN})
  if(NOT ARG_PACKAGE)
    message(FATAL_ERROR "detops_add_extension: PACKAGE is required")
  endif()

  # The ops: schemas and CPU kernels in a plain shared library without Python.
  set(ops ${ARG_PACKAGE}_ops)
  add_library(${ops} SHARED ${ARG_CPU_SOURCES} "${DETOPS_CORE_OPS_INFO_SOURCE}")
  _detops_stable_abi(${ops})
  target_include_directories(${ops} PRIVATE ${ARG_INCLUDE_DIRS})
  target_compile_definitions(${ops} PRIVATE DETOPS_BUILT_WITH_CUDA=$<BOOL:${DETOPS_BUILD_CUDA}>
                                            DETOPS_PACKAGE_NAME="${ARG_PACKAGE}"
                                            DETOPS_OPS_INFO_FN=${ARG_PACKAGE}_ops_info)
  # Every symbol must resolve in the library or libtorch_cpu (and what it needs): a Python
  # symbol would fail the link. Sanitizer runtimes are resolved at load time, so not there.
  if(NOT CMAKE_CXX_FLAGS MATCHES "-fsanitize")
    target_link_options(${ops} PRIVATE "LINKER:-z,defs")
  endif()
  install(TARGETS ${ops} LIBRARY DESTINATION ${ARG_PACKAGE})

  pybind11_add_module(_C MODULE "${DETOPS_CORE_MODULE_SOURCE}")
  target_include_directories(_C PRIVATE "${DETOPS_CORE_INCLUDE_DIR}")
  target_compile_features(_C PRIVATE cxx_std_17)
  target_compile_definitions(_C PRIVATE DETOPS_PACKAGE_NAME="${ARG_PACKAGE}"
                                        DETOPS_OPS_INFO_FN=${ARG_PACKAGE}_ops_info
                                        DETOPS_OPS_LIBRARY="lib${ops}.so")
  target_link_libraries(_C PRIVATE ${ops})
  set_target_properties(_C PROPERTIES BUILD_RPATH "$ORIGIN" INSTALL_RPATH "$ORIGIN")
  install(TARGETS _C LIBRARY DESTINATION ${ARG_PACKAGE})

  if(DETOPS_BUILD_CUDA AND ARG_CUDA_SOURCES)
    add_library(_C_cuda SHARED ${ARG_CUDA_SOURCES})
    _detops_stable_abi(_C_cuda)
    target_include_directories(_C_cuda PRIVATE ${ARG_INCLUDE_DIRS})
    set_target_properties(_C_cuda PROPERTIES PREFIX "" CUDA_RUNTIME_LIBRARY Shared
                                             CUDA_ARCHITECTURES "${DETOPS_CUDA_ARCHS}")
    target_compile_options(_C_cuda PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr -Xcompiler=-Wall>)
    # USE_CUDA makes torch's C shim declare its CUDA functions.
    target_compile_definitions(_C_cuda PRIVATE USE_CUDA)
    target_link_libraries(_C_cuda PRIVATE "${DETOPS_TORCH_CUDA_LIBRARY}")
    install(TARGETS _C_cuda LIBRARY DESTINATION ${ARG_PACKAGE})
  endif()
  if(DETOPS_CUDA_EMULATION AND ARG_CUDA_SOURCES)
    _detops_add_emulation(${ARG_PACKAGE} SOURCES ${ARG_CUDA_SOURCES} INCLUDE_DIRS ${ARG_INCLUDE_DIRS})
  endif()
endfunction()
