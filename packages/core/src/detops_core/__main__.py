"""``python -m detops_core --cmake-dir | --include-dir``: paths for build scripts."""

import argparse

from detops_core import cmake_dir, include_dir

parser = argparse.ArgumentParser(prog="python -m detops_core")
group = parser.add_mutually_exclusive_group(required=True)
group.add_argument("--cmake-dir", action="store_true")
group.add_argument("--include-dir", action="store_true")
args = parser.parse_args()
print(cmake_dir() if args.cmake_dir else include_dir())
