# Fake `esp32` for the unix port: records the deep-sleep wake source. Tests only.
WAKEUP_ALL_LOW = False
WAKEUP_ANY_HIGH = True
ext0 = []


def wake_on_ext0(pin, level) -> None:
    ext0.append((pin, level))
