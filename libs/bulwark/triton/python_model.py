"""Triton Python-backend model for Bulwark artifacts (copied into each version folder as model.py).

At load, the artifact in the version folder is verified (Ed25519 signature, every file's digest) and its
weights are decrypted in memory with the key-encryption key; plaintext weights never touch disk. A failed
verification or a missing key fails the load with a message Triton logs and returns to the updater.

At inference, every request in a dynamic batch is concatenated into one forward pass and split back.
Keys come from BULWARK_KEYS_DIR (kek.json, verify.json) or BULWARK_KEYRING_KEK / BULWARK_VERIFY_KEYS.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from bulwark.artifacts import open_folder
from bulwark.crypto import load_ring, load_verifier
from bulwark.crypto.keys import RING_KEK
from bulwark.kernels import load_torchscript


class TritonPythonModel:
    """One version of one Bulwark model."""

    def initialize(self, args: dict) -> None:
        """Verify, decrypt in memory, load the TorchScript module."""
        config = json.loads(args["model_config"])
        folder = Path(args["model_repository"]) / args["model_version"]
        keys = Path(os.environ.get("BULWARK_KEYS_DIR", "var/keys"))
        artifact = open_folder(folder, load_verifier(keys), load_ring(RING_KEK, keys))
        torch.set_num_threads(int(os.environ.get("BULWARK_TRITON_TORCH_THREADS", "1")))
        # A model that calls Bulwark's int8 kernel gets the kernel library loaded first.
        self.module = load_torchscript(artifact.files["model.pt"])
        self.version = int(args["model_version"])
        self.inputs = [spec["name"] for spec in config["input"]]
        # OUTPUT__0: class logits; OUTPUT__1 (when configured): the last hidden layer, for the guard's scores.
        self.outputs = [spec["name"] for spec in config["output"]]
        del artifact  # the decrypted bytes go with it; only the loaded module stays in memory

    def execute(self, requests: list) -> list:
        """Run all requests of a dynamic batch as one forward pass."""
        try:
            arrays = [[pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in self.inputs] for r in requests]
            sizes = [a[0].shape[0] for a in arrays]
            stacked = [torch.from_numpy(np.ascontiguousarray(np.concatenate([a[i] for a in arrays])))
                       for i in range(len(self.inputs))]
            with torch.inference_mode():
                outs = [self.module(*stacked).float().numpy()]
                if len(self.outputs) > 1:
                    outs.append(self.module.embed(*stacked).float().numpy())
        except Exception as exc:  # noqa: BLE001 - every request gets the error, the model stays loaded
            error = pb_utils.TritonError(f"bulwark model v{getattr(self, 'version', '?')} failed: {type(exc).__name__}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        responses, start = [], 0
        for n in sizes:
            tensors = [pb_utils.Tensor(name, out[start:start + n]) for name, out in zip(self.outputs, outs)]
            responses.append(pb_utils.InferenceResponse(tensors))
            start += n
        return responses

    def finalize(self) -> None:
        """Drop the module."""
        self.module = None
