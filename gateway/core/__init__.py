"""The hub's pure cores: typed inputs in, typed records and actions out; no I/O, no asyncio, no clock of their own.

Each module has one job and is tested without an event loop; `gateway.hub` is the thin async shell that feeds them
events, carries out what they return (feedback, pendant writes, the fallback notifier) and commits their records:

- :mod:`gateway.core.counters`: what the hub has done (for `carehub doctor`, the demo and benchmarks);
- :mod:`gateway.core.measurements`: a meter reading -> a measurement record and the rule engine's observation;
- :mod:`gateway.core.device_reports`: battery, link, clock and misbehaviour reports -> device-status records;
- :mod:`gateway.core.alarm_records`: alarm-book and panic-lifecycle steps -> alarm records, revisions, tiers;
- :mod:`gateway.core.pendant_link`: pendant frames -> verified events, confirms and feedback frames, panic records;
- :mod:`gateway.core.downlink`: verified down-messages -> decisions (apply, or refuse with a reason);
- :mod:`gateway.core.sealer`: record drafts -> numbered records -> signed, sealed outbox items.
"""
