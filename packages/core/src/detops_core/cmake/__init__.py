"""Folder holding detops_coreConfig.cmake; a package so an entry point can name it."""
