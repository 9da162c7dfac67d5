import os
import sys

# The suite runs with --import-mode=importlib: make the helper module next to it importable.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
