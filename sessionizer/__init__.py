"""The sessionizer: hits to sessions (SPEC section 3). See sessionizer.machine for the rules."""

from sessionizer.compiled import check as _check_compiled

_check_compiled()  # before any compiled module of the package is imported (sessionizer.compiled)
