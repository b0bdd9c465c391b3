"""Bytecode for interpreters whose packages were installed without it (pip run with PYTHONDONTWRITEBYTECODE, a
read-only install: `probe.versions.compiled` is false there). Such an interpreter compiles torch and transformers from
source on every start, most of the load on the H200 machine (15-19 s of imports, H72-H73). The SDK keeps their
bytecode in a folder of its own (PYTHONPYCACHEPREFIX, src/runtime/worker-bytecode.ts): a worker lists the sources it
imported once loaded (`sources`), and a separate low-priority process compiles them there afterwards (`warm`), so
that the first load pays nothing more and the next ones read bytecode (H74: 38.8 s when the first load itself wrote
it, against 25.8 s for the reference).
"""
