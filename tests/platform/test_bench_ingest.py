"""``python -m carehub.bench_ingest`` runs the real ingest core over a real store on the workers' event loop and
stores every envelope it sealed (the figures themselves are printed, never asserted)."""

from __future__ import annotations

import json

import pytest

from carehub.bench_ingest import main


@pytest.mark.parametrize("per_batch", ["1", "4"])
def test_the_harness_stores_every_envelope_and_prints_its_figures(
    per_batch: str, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["--hubs", "3", "--backlog", "5", "--frame", "2", "--frames-per-batch", per_batch])
    figures = json.loads(capsys.readouterr().out)
    assert (figures["engine"], figures["envelopes"], figures["frames_per_batch"]) == ("sqlite", 15, int(per_batch))
    assert figures["cpu_ratio_to_crypto"] > 0
    assert figures["crypto_interleaved_us"] > 0
    assert figures["cpu_ratio_to_interleaved_crypto"] > 0
    assert figures["ack_bytes"] > 0
