# The CPU emulation of a package's CUDA kernels (DETOPS_CUDA_EMULATION=ON, tests only):
# `_C_emulated.so` is the package's real `.cu` sources compiled as C++20 against
# detops/cuda_emulation.h. It registers the same entry points for CPU tensors under the
# `detops_emulated` op namespace, so tests can compare them with the CPU kernels without a
# GPU. No nvcc is needed. Sanitizer flags come from CMAKE_CXX_FLAGS of the build.
include_guard(GLOBAL)

get_filename_component(DETOPS_CORE_EMULATION_RECORD "${CMAKE_CURRENT_LIST_DIR}/../csrc/emulation_record.cpp" ABSOLUTE)

find_package(Threads REQUIRED)

function(_detops_add_emulation package)
  cmake_parse_arguments(ARG "" "" "SOURCES;INCLUDE_DIRS" ${ARGN})
  set(units)
  foreach(src IN LISTS ARG_SOURCES)
    get_filename_component(path "${src}" ABSOLUTE)
    get_filename_component(stem "${src}" NAME_WE)
    # A C++ file that includes the .cu: the same source file cannot be CUDA in one target
    # and C++ in another.
    set(unit "${CMAKE_CURRENT_BINARY_DIR}/emulated/${stem}.cpp")
    file(CONFIGURE OUTPUT "${unit}" CONTENT "#include \"${path}\"\n" @ONLY)
    # One copy of a `__shared__` variable serves every block, so the blocks of a file that
    # declares one run one at a time (detops/cuda_emulation.h).
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${path}")
    file(READ "${path}" source)
    string(FIND "${source}" "__shared__" at)
    if(NOT at EQUAL -1)
      set_source_files_properties("${unit}" PROPERTIES COMPILE_DEFINITIONS DETOPS_EMULATION_SHARED_MEMORY)
    endif()
    list(APPEND units "${unit}")
  endforeach()
  add_library(_C_emulated SHARED ${units} "${DETOPS_CORE_EMULATION_RECORD}")
  _detops_stable_abi(_C_emulated)
  target_include_directories(_C_emulated PRIVATE ${ARG_INCLUDE_DIRS})
  target_compile_definitions(_C_emulated PRIVATE DETOPS_CUDA_EMULATION)
  target_compile_features(_C_emulated PRIVATE cxx_std_20)  # std::atomic_ref for atomics
  target_link_libraries(_C_emulated PRIVATE Threads::Threads)
  set_target_properties(_C_emulated PROPERTIES PREFIX "")
  install(TARGETS _C_emulated LIBRARY DESTINATION ${package})
endfunction()
