"""The fuzz corpus replayed, the fuzz loop checked against planted defects, and a short ``scripts/fuzz`` pass for CI.

The corpus (``tests/fuzz/corpus/*.hex``) holds the inputs that once broke a decoder or sit at the protocol's limits
(issue 19: the 1,792-byte bignum, maximal uint64 values, deep nesting); each runs against every target, so a
regression anywhere in ``protocols/`` fails here without running the fuzzer.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import fuzz_engine
import fuzz_inputs
import fuzz_targets
import pytest
from fuzz_targets import TARGETS, Target

from protocols import cbor
from protocols.errors import DecodeError

ROOT = Path(__file__).resolve().parents[2]
CORPUS = fuzz_targets.corpus()


def test_the_corpus_holds_the_known_bad_inputs() -> None:
    assert CORPUS["cbor-bignum-1792"] == b"\xc2\x59\x07\x00" + b"\xff" * 1792  # issue 19 item 2, byte for byte
    assert CORPUS["cbor-uint64-max"] == b"\x1b" + b"\xff" * 8
    assert CORPUS["cbor-deep-arrays"].startswith(b"\x81" * 1000)
    for name in ("ack-stored-2pow63", "down-seq-2pow63", "envelope-seq-2pow63", "record-seq-uint64-max"):
        assert name in CORPUS


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_entry_leaves_only_documented_errors(name: str) -> None:
    data = CORPUS[name]
    for target in TARGETS:
        _, failure, _ = fuzz_engine.run_one(target, data, fuzz_engine.DEFAULT_TIME_LIMIT)
        assert failure is None, f"{name} on {target.name}: {failure}"


@pytest.mark.parametrize(
    "name", sorted(n for n in CORPUS if n.startswith(("cbor-", "ack-", "down-", "envelope-", "record-")))
)
def test_no_cbor_corpus_entry_is_accepted(name: str) -> None:
    """Each CBOR entry is refused by the target it was made for (or by every CBOR target, for cbor-*)."""
    kind = name.split("-", maxsplit=1)[0]
    targets = {
        "cbor": ["record", "uplink", "ack.signed", "down.signed", "envelope.signed"],
        "ack": ["ack.signed"],
        "down": ["down.signed"],
        "envelope": ["envelope.signed"],
        "record": ["record"],
    }[kind]
    for target_name in targets:
        accepted, failure, _ = fuzz_engine.run_one(fuzz_targets.TARGETS_BY_NAME[target_name], CORPUS[name], 1.0)
        assert failure is None
        assert not accepted, f"{target_name} accepted {name}"


def test_the_targets_cover_every_decoder_a_radio_or_the_network_reaches() -> None:
    names = {target.name for target in TARGETS}
    from protocols import gatt  # noqa: PLC0415 - the list of characteristics

    assert {f"gatt.{uuid:04X}" for uuid in gatt.DECODERS} <= names
    assert {
        "cbor",
        "topic",
        "uplink",
        "record",
        "record.hub",
        "envelope",
        "envelope.signed",
        "ack",
        "ack.signed",
    } <= names
    assert {"down", "down.signed", "pendant.event", "pendant.verify", "pendant.confirm", "pendant.feedback"} <= names
    assert "pendant.device_info" in names


def test_the_seeds_include_the_documented_vectors() -> None:
    seeds = set(fuzz_targets.seeds())
    assert bytes.fromhex("01012a00000057100e0000b43673dd3ad64ca3b3313dd30947339b") in seeds  # §9.5 event
    assert any(len(s) == 264 and s.startswith(bytes.fromhex("a961760162696450")) for s in seeds)  # §3 record
    assert set(CORPUS.values()) <= seeds


def test_documented_vectors_are_accepted_by_their_targets() -> None:
    """The seeds really reach past the signatures: the §7 ack and the §9.5 event verify under the fixed keys."""
    seeds = fuzz_targets.seeds()
    ack = next(s for s in seeds if s.startswith(bytes.fromhex("67409925af5ade74")))
    assert fuzz_engine.run_one(fuzz_targets.TARGETS_BY_NAME["ack"], ack, 1.0)[0]
    event = bytes.fromhex("01012a00000057100e0000b43673dd3ad64ca3b3313dd30947339b")
    assert fuzz_engine.run_one(fuzz_targets.TARGETS_BY_NAME["pendant.verify"], event, 1.0)[0]
    assert fuzz_engine.run_one(fuzz_targets.TARGETS_BY_NAME["pendant.verify.signed"], event[:-16], 1.0)[0]


# --- the loop itself must be able to fail ---------------------------------------------------------------------------


def _leaky(data: bytes) -> None:
    if b"\xc2" in data:
        raise ValueError("a defect: an undocumented exception")
    cbor.loads(data)


def _stuck(data: bytes) -> None:
    if data[:1] == b"\xa9":  # the documented record's first byte
        while True:
            pass
    cbor.loads(data)


def test_an_undocumented_exception_is_reported_with_its_reproducer() -> None:
    target = Target("leaky", _leaky, (DecodeError,), cbor_body=True)
    report = fuzz_engine.run([target], 300, seed=3)
    assert report.failed > 0
    failure = report.failures[0]
    assert failure.problem == "builtins.ValueError"
    assert b"\xc2" in failure.data
    text = fuzz_engine.format_report(report)
    assert "FAIL leaky: builtins.ValueError" in text
    assert failure.data.hex()[:200] in text


def test_a_slow_input_is_reported() -> None:
    target = Target("stuck", _stuck, (DecodeError,), cbor_body=True)
    report = fuzz_engine.run([target], 1, time_limit=0.05)
    assert report.failed >= 1
    assert {f.problem for f in report.failures} == {"slow"}
    assert report.failures[0].data[:1] == b"\xa9"
    assert "limit 0.050 s" in fuzz_engine.format_report(report)


def test_failures_are_saved_in_the_corpus_format(tmp_path: Path) -> None:
    target = Target("leaky", _leaky, (DecodeError,), cbor_body=True)
    report = fuzz_engine.run([target], 300, seed=3)
    saved = fuzz_engine.save_failures(report, tmp_path)
    assert saved
    assert fuzz_targets.read_corpus_file(saved[0]) == report.failures[0].data


def test_the_exit_status_is_non_zero_on_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fuzz_engine, "TARGETS", (Target("leaky", _leaky, (DecodeError,), cbor_body=True),))
    assert fuzz_engine.main(["--inputs", "300", "--seed", "3"]) == 1
    monkeypatch.setattr(fuzz_engine, "TARGETS", (Target("cbor", cbor.loads, (DecodeError,), cbor_body=True),))
    assert fuzz_engine.main(["--inputs", "300"]) == 0


def test_a_run_is_deterministic_for_a_seed() -> None:
    chosen = [fuzz_targets.TARGETS_BY_NAME[name] for name in ("cbor", "gatt.2A35", "pendant.event")]
    one = fuzz_engine.run(chosen, 1000, seed=7)
    two = fuzz_engine.run(chosen, 1000, seed=7)
    assert [(s.inputs, s.accepted) for s in one.stats] == [(s.inputs, s.accepted) for s in two.stats]


def test_mutations_stay_within_the_input_limit() -> None:
    rng = random.Random(1)  # noqa: S311 - reproducible, not secret
    data = b"\x00" * fuzz_inputs.MAX_INPUT
    for _ in range(50):
        data = fuzz_inputs.mutate(rng, data, [data])
        assert len(data) <= fuzz_inputs.MAX_INPUT


# --- the short pass CI runs -----------------------------------------------------------------------------------------


def test_scripts_fuzz_short_pass() -> None:
    """About 20 s: every target, seeds first, then hypothesis-driven and mutated inputs; exit 0, no failure."""
    result = subprocess.run(
        [str(ROOT / "scripts" / "fuzz"), "--inputs", "50000", "--seed", "0"],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    for target in TARGETS:
        assert f"\n{target.name} " in result.stdout
    assert ", 0 failures," in result.stdout


def test_scripts_fuzz_refuses_unknown_targets() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "fuzz" / "fuzz_engine.py"), "--targets", "nonsense", "--inputs", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "unknown targets" in result.stderr
