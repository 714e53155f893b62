# Generates a C++ source holding every migrations/NNNN_name.sql as a raw string.
# Invoked at build time: cmake -DMIGRATIONS_DIR=... -DOUTPUT=... [-DFUNCTION=name]
#   -P embed_migrations.cmake (FUNCTION: the accessor's name, embedded_migrations_table by default)
if(NOT FUNCTION)
  set(FUNCTION embedded_migrations_table)
endif()
file(GLOB files "${MIGRATIONS_DIR}/[0-9][0-9][0-9][0-9]_*.sql")
list(SORT files)
set(body "")
set(expected 1)
foreach(f IN LISTS files)
  get_filename_component(name "${f}" NAME_WE)
  string(SUBSTRING "${name}" 0 4 num)
  math(EXPR version "${num}")
  if(NOT version EQUAL expected)
    message(FATAL_ERROR "migration ${name}: expected number ${expected}")
  endif()
  math(EXPR expected "${expected} + 1")
  file(READ "${f}" sql)
  string(APPEND body "    {${version}, \"${name}\", R\"iarelay_sql(${sql})iarelay_sql\"},\n")
endforeach()
file(WRITE "${OUTPUT}.tmp"
"// Generated from migrations/*.sql by embed_migrations.cmake. Do not edit.\n"
"#include \"journal/journal.h\"\n\nnamespace iarelay {\n"
"const std::vector<Migration>& ${FUNCTION}() {\n"
"  static const std::vector<Migration> kMigrations = {\n${body}  };\n  return kMigrations;\n}\n"
"}  // namespace iarelay\n")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
