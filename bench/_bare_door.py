"""The least front door the design's packages allow: the inference bench's floor for the door's overhead.

A grpcio server answering InferenceService.Predict with nothing but what every front door on this stack must
do: turn the request into the model's input (the version's own encoder), look the answer up in Redis with
one redis-py round trip, on a miss call Triton with tritonclient and take the softmax, and write the answer
back to Redis off the answer path. No Bulwark logic: no guard, routing, extraction defence, auth, tracing,
metrics, logging or error mapping. Its overhead over a direct Triton call is what grpcio, redis-py and
tritonclient cost on this machine before Bulwark adds anything.

Run by bench/inference.py in a process of its own (as the front door runs), which reads the port it prints:

    python bench/_bare_door.py MODEL VERSION REDIS_PREFIX KEYS_DIR REDIS_URL TRITON_URL
"""

from __future__ import annotations

import hashlib
import queue
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import orjson
import redis

from bulwark.api.v1 import inference_pb2, inference_pb2_grpc
from bulwark.crypto import load_verifier
from bulwark.redis_keys import RedisKeys
from bulwark.registry import ModelRegistry
from bulwark.triton.client import TritonClient
from bulwark.versions import VersionCatalog

TTL_S = 300


class BareDoor(inference_pb2_grpc.InferenceServiceServicer):
    """Predict only: encode, one Redis lookup, Triton on a miss, the cache write on a writer thread."""

    def __init__(self, model: str, version: int, prefix: str, keys_dir: Path, redis_url: str,
                 triton_url: str) -> None:
        self.model, self.version = model, version
        self.redis = redis.Redis.from_url(redis_url)
        catalog = VersionCatalog(ModelRegistry(self.redis, RedisKeys(prefix)), load_verifier(keys_dir))
        self.served = catalog.get(model, version)
        self.triton = TritonClient(triton_url)
        self.prefix = f"{prefix}:bare:{model}:{version}:"
        self.writes: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
        threading.Thread(target=self._write, daemon=True).start()

    def Predict(self, request: inference_pb2.PredictRequest,  # noqa: N802
                context: grpc.ServicerContext) -> inference_pb2.PredictResponse:
        features = {k: getattr(v, v.WhichOneof("kind")) for k, v in request.features.items()}
        arrays = self.served.encode([features])
        key = self.prefix + hashlib.blake2b(orjson.dumps(features, option=orjson.OPT_SORT_KEYS),
                                            digest_size=16).hexdigest()
        hit = self.redis.mget([key])[0]
        if hit is not None:
            probabilities = orjson.loads(hit)
        else:
            z = self.triton.infer(self.model, self.version, arrays, self.served.inputs, self.served.outputs,
                                  timeout_s=10)[0][0].astype(np.float64)
            e = np.exp(z - z.max())
            probabilities = (e / e.sum()).tolist()
            self.writes.put((key, orjson.dumps(probabilities)))
        return inference_pb2.PredictResponse(model=self.model, version=self.version,
                                             probabilities=probabilities, classes=list(self.served.classes),
                                             cached=hit is not None)

    def _write(self) -> None:
        while True:
            key, value = self.writes.get()
            self.redis.set(key, value, ex=TTL_S)


def main() -> None:
    model, version, prefix, keys_dir, redis_url, triton_url = sys.argv[1:7]
    server = grpc.server(ThreadPoolExecutor(max_workers=16))
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(
        BareDoor(model, int(version), prefix, Path(keys_dir), redis_url, triton_url), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
