"""Times compressed forms in a process that holds nothing else, as a serving process holds only its model:
`python -m services.quantizer.timing FOLDER`, run by `evaluate.measure_latencies`.

FOLDER holds the forms' TorchScript bytes (`0.pt`, `1.pt`, ... in the order `job.json` names them), the
inputs per batch size (`inputs.pt`) and the timing settings (`job.json`); the medians in milliseconds are
written to `latency.json` as {batch size: {form: ms}}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from services.quantizer.evaluate import measure_latencies
from services.quantizer.settings import QuantizerSettings


def main(folder: Path) -> None:
    """Time the forms at every batch size here (`measure_latencies` in this process), write latency.json."""
    job = json.loads((folder / "job.json").read_text())
    own = QuantizerSettings(**job["settings"], latency_process="same")
    forms = {name: (folder / f"{i}.pt").read_bytes() for i, name in enumerate(job["forms"])}
    inputs = torch.load(folder / "inputs.pt", weights_only=True)
    latency = measure_latencies(forms, {n: tuple(x) for n, x in inputs.items()}, own)
    (folder / "latency.json").write_text(json.dumps(latency))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
