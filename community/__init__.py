"""The community platform: ingest workers, storage, signed acks and down-messages, enrolment, broker configuration.

It depends on :mod:`protocols` and :mod:`runtime` only, never on the hub (:mod:`gateway`) or the simulator
(``tests/platform/test_import_boundary.py``); ``carehub platform`` is its command line (:mod:`community.cli`).
"""
