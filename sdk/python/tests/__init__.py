"""Tests of the NOPS Python SDK (python3 -m unittest discover -v, from sdk/python)."""
