# Included by the top-level CMakeLists.txt before the layers are defined, in the fuzz tree only:
# what product code needs to compile with clang 14 without editing it.
#
# domain/events.h declares `namespace v1 = ::keyledger::v1;` inside namespace keyledger, where
# v1 already is a namespace (events.pb.h): g++ accepts that, clang refuses it as a redefinition
# (a hard error, no -Wno- for it). The alias changes nothing, so this tree compiles a copy of the
# header without that line, found before the real one. Remove this file once the line is gone.
set(keyledger_shadow_dir ${CMAKE_BINARY_DIR}/clang-compat)
set(keyledger_events_header ${CMAKE_SOURCE_DIR}/domain/events.h)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${keyledger_events_header})
file(READ ${keyledger_events_header} keyledger_events_text)
string(REPLACE "namespace v1 = ::keyledger::v1;" "" keyledger_events_patched "${keyledger_events_text}")
if(NOT keyledger_events_patched STREQUAL keyledger_events_text)
  file(WRITE ${keyledger_shadow_dir}/domain/events.h.tmp "${keyledger_events_patched}")
  file(COPY_FILE ${keyledger_shadow_dir}/domain/events.h.tmp ${keyledger_shadow_dir}/domain/events.h
       ONLY_IF_DIFFERENT)
  include_directories(BEFORE ${keyledger_shadow_dir})
else()
  file(REMOVE ${keyledger_shadow_dir}/domain/events.h)
endif()

# api/metrics.cpp: a heterogeneous std::map lookup clang 14 cannot compile against libstdc++ 12
# (see clang_compat_tuple.h). Remove once the lookup uses a key clang can compare.
set_source_files_properties(${CMAKE_SOURCE_DIR}/api/metrics.cpp PROPERTIES
                            COMPILE_OPTIONS "-include;${CMAKE_CURRENT_LIST_DIR}/clang_compat_tuple.h")
