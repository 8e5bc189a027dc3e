"""Touchstream: the command-line entry point and the local development stack."""
