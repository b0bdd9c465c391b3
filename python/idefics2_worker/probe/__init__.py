"""Environment probes the SDK runs on an interpreter before it starts the worker; each prints one JSON object.

  python -m idefics2_worker.probe.versions   the interpreter's version and the worker's packages' versions
  python -m idefics2_worker.probe.doctor     what importing torch, bitsandbytes and torchvision finds

Standard library only. The versions probe runs on interpreters that the version check exists to reject, and
must still name their version, so every file here keeps to what Python 2.6 already runs, as the inline probes
they replace did: no f-strings, annotations, dict or set comprehensions, set literals, keyword-only arguments,
`from __future__ import annotations` or non-ASCII text, and each probe is a module run with -m (running a
package's __main__ needs 2.7). tests/probe/test_old_pythons.py checks this and runs both probes on the old
interpreters it finds.
"""
