"""Triton kernels of the decode step; they import only torch and Triton."""
