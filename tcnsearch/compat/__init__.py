"""The private API of other libraries that tcnsearch relies on, one module per library.

Each function here names what it relies on and why no public API does it; tests/test_compat.py
pins each behaviour, so that an upgrade of the library that changes it fails there, by name.
"""
