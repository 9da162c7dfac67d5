"""``python -m detops_core --cmake-dir | --include-dir | --libraries PKG...``: paths for
build scripts; ``--libraries`` prints the native libraries of the given packages (e.g.
``detops_roi detops_nms``), joined by ``:``, in load order, for a program without Python."""

import argparse

from detops_core import cmake_dir, include_dir, native_libraries

parser = argparse.ArgumentParser(prog="python -m detops_core")
group = parser.add_mutually_exclusive_group(required=True)
group.add_argument("--cmake-dir", action="store_true")
group.add_argument("--include-dir", action="store_true")
group.add_argument("--libraries", nargs="+", metavar="PACKAGE")
args = parser.parse_args()
if args.libraries:
    print(":".join(lib for package in args.libraries for lib in native_libraries(package)))
else:
    print(cmake_dir() if args.cmake_dir else include_dir())
