import os

import fuzz_support


def pytest_addoption(parser):
    group = parser.getgroup("detops fuzzing (test_fuzz.py)")
    group.addoption(
        "--long",
        action="store_true",
        help="fuzz with fresh random examples for --fuzz-minutes instead of CI's fixed set",
    )
    group.addoption(
        "--fuzz-minutes",
        type=float,
        default=60.0,
        help="with --long: total minutes, shared equally by the selected fuzz targets (default 60)",
    )


def pytest_configure(config):
    fuzz_support.LONG = config.getoption("--long")
    # Still the terminal's stderr here (output capture starts later): the watchdog and
    # DETOPS_FUZZ_TRACE write there, so that what they print survives the process.
    fuzz_support.REAL_STDERR_FD = os.dup(2)


def pytest_collection_modifyitems(config, items):
    targets = [item for item in items if item.nodeid.split("::")[0].endswith("test_fuzz.py")]
    if targets:
        fuzz_support.LONG_SECONDS_PER_TEST = config.getoption("--fuzz-minutes") * 60.0 / len(targets)
