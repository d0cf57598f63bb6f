# MicroPython test runner for the pendant firmware (unix port). Module path: fakes, pendant sources, this folder:
#
#   MICROPYPATH=firmware/tests/fakes:firmware/pendant:firmware/tests micropython firmware/tests/run.py [--list] [ID...]
#
# An ID is "module::function". Without IDs every test runs. A test is a function named test_*; an async one runs
# under asyncio.run on a fresh event loop. Prints "PASS id" / "FAIL id" and a traceback; exits 1 on any failure.
import asyncio
import sys

MODULES = (
    "test_hmac",
    "test_frames",
    "test_store",
    "test_button",
    "test_battery",
    "test_feedback",
    "test_link",
    "test_app",
    "test_keycheck",
)


def collect():
    for name in MODULES:
        module = __import__(name)
        for attr in sorted(dir(module)):
            if attr.startswith("test_"):
                yield name + "::" + attr, getattr(module, attr)


def run_one(test_id, fn) -> bool:
    import support

    support.reset()
    asyncio.new_event_loop()
    try:
        result = fn()
        if result is not None and hasattr(result, "send"):
            asyncio.run(result)
    except Exception as exc:  # report any failure of the test, then carry on with the next one
        print("FAIL", test_id)
        sys.print_exception(exc)
        return False
    finally:
        support.cleanup()
    print("PASS", test_id)
    return True


def main(argv) -> int:
    tests = list(collect())
    if "--list" in argv:
        for test_id, _ in tests:
            print(test_id)
        return 0
    wanted = [a for a in argv if not a.startswith("--")]
    failed = 0
    ran = 0
    for test_id, fn in tests:
        if wanted and test_id not in wanted:
            continue
        ran += 1
        if not run_one(test_id, fn):
            failed += 1
    if wanted and ran != len(wanted):
        print("FAIL unknown test id among", wanted)
        return 1
    print("%d passed, %d failed" % (ran - failed, failed))
    return 1 if failed else 0


sys.exit(main(sys.argv[1:]))
