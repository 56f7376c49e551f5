"""The modelreg command line: a thin door onto the :mod:`modelreg` library."""
