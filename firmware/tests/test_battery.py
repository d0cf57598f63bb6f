import battery
from support import check, equal


def test_percent_curve():
    equal(battery.percent(4300), 100, "full")
    equal(battery.percent(4200), 100, "4.2 V")
    equal(battery.percent(3700), 20, "3.7 V")
    equal(battery.percent(3725), 25, "between points")
    equal(battery.percent(3300), 0, "empty")
    equal(battery.percent(2000), 0, "below empty")
    last = 101
    for mv in range(4300, 3200, -10):
        p = battery.percent(mv)
        check(0 <= p <= last, "not monotonic at", mv)
        last = p


def test_low_reported_once_with_hysteresis():
    sent = False
    reports = 0
    for pct in (50, 25, 19, 21, 19, 18, 25, 19):
        report, sent = battery.assess(pct, sent)
        reports += report
    equal(reports, 1, "one report per discharge")
    report, sent = battery.assess(80, sent)  # charged
    equal((report, sent), (False, False), "cleared when charged")
    equal(battery.assess(15, sent), (True, True), "reported again on the next discharge")
