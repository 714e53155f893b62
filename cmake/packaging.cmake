# Installation layout and the Debian package (cpack -G DEB, run from the build directory).
include(GNUInstallDirs)

install(FILES ${PROJECT_SOURCE_DIR}/packaging/iarelayd.service DESTINATION lib/systemd/system)
install(FILES ${PROJECT_SOURCE_DIR}/packaging/iarelay.conf DESTINATION /etc/iarelay)
install(FILES ${PROJECT_SOURCE_DIR}/examples/iarelay.conf
        DESTINATION ${CMAKE_INSTALL_DOCDIR} RENAME iarelay.conf.example)
install(FILES ${PROJECT_SOURCE_DIR}/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/docs/ DESTINATION ${CMAKE_INSTALL_DOCDIR}
        FILES_MATCHING PATTERN "*.md")
install(DIRECTORY ${PROJECT_SOURCE_DIR}/examples/ DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples)
# The Integration Agent shim (docs/integration-agent.md): copied from here to the IA host.
install(FILES ${PROJECT_SOURCE_DIR}/contrib/integration-agent/iarelay-shim.js
        DESTINATION ${CMAKE_INSTALL_DATADIR}/iarelay/integration-agent)

# --help of every program, as plain-text docs beside the Markdown ones.
set(HELP_DOCS "")
foreach(prog iarelayd iarelay iarelay-sink iarelay-loadgen)
  if(TARGET ${prog})
    set(out ${CMAKE_BINARY_DIR}/help/${prog}.txt)
    add_custom_command(OUTPUT ${out}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_BINARY_DIR}/help
      COMMAND $<TARGET_FILE:${prog}> --help > ${out}
      DEPENDS ${prog} COMMENT "Writing ${prog} --help")
    list(APPEND HELP_DOCS ${out})
    install(TARGETS ${prog} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  endif()
endforeach()
add_custom_target(help_docs ALL DEPENDS ${HELP_DOCS})
install(FILES ${HELP_DOCS} DESTINATION ${CMAKE_INSTALL_DOCDIR}/help)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME iarelay)
set(CPACK_PACKAGE_VENDOR "iarelay")
set(CPACK_PACKAGE_CONTACT "iarelay maintainers <iarelay@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "durable relay for xMatters outbound-integration webhooks")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# conffiles: an upgrade keeps the operator's /etc/iarelay/iarelay.conf (dpkg asks when both changed).
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${PROJECT_SOURCE_DIR}/packaging/postinst ${PROJECT_SOURCE_DIR}/packaging/conffiles)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
