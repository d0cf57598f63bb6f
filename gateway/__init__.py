"""The hub daemon: BLE, rules and alarms, the durable outbox and the uplink."""
