# The per-layer include roots (CMakeLists.txt, keyledger_layer) enforce "downward only" at
# compile time: from each layer's root a header of its own layer and of the layers below
# compiles, and a header of the layer above does not, with the compiler naming the file.
# ctest runs it: cmake -DCXX=<compiler> -DROOTS=<build>/include-roots -DWORK=<dir> -P layering_test.cmake
set(layers domain eventstore projections consumers api)
set(header_domain domain/status.h)
set(header_eventstore eventstore/event_store.h)
set(header_projections projections/projector.h)
set(header_consumers consumers/kafka_client.h)
set(header_api api/http.h)

file(MAKE_DIRECTORY ${WORK})
function(compiles layer header result_var error_var)
  string(MAKE_C_IDENTIFIER "${layer}_${header}" name)
  file(WRITE ${WORK}/${name}.cpp "#include \"${header}\"\n")
  execute_process(COMMAND ${CXX} -std=c++20 -fsyntax-only -I${ROOTS}/${layer} ${WORK}/${name}.cpp
                  RESULT_VARIABLE rc ERROR_VARIABLE err OUTPUT_QUIET)
  set(${result_var} ${rc} PARENT_SCOPE)
  set(${error_var} "${err}" PARENT_SCOPE)
endfunction()

list(LENGTH layers count)
math(EXPR last "${count} - 1")
foreach(i RANGE ${last})
  list(GET layers ${i} layer)
  # domain/status.h needs nothing but the standard library: every layer reaches it.
  compiles(${layer} domain/status.h rc err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "layer ${layer}: domain/status.h does not compile from its root:\n${err}")
  endif()
  if(i LESS last)
    math(EXPR above "${i} + 1")
    list(GET layers ${above} upper)
    set(header ${header_${upper}})
    compiles(${layer} ${header} rc err)
    if(rc EQUAL 0)
      message(FATAL_ERROR "layer ${layer}: ${header}, a layer above it, compiles from its root")
    endif()
    if(NOT err MATCHES "${header}: No such file or directory")
      message(FATAL_ERROR "layer ${layer}: ${header} failed for another reason than its absence:\n${err}")
    endif()
    message(STATUS "layer ${layer}: reaches domain/status.h, not ${header}")
  endif()
endforeach()
