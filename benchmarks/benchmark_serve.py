"""REST server throughput and latency under concurrent clients: batched (``--max-batch``) vs one request at a time.

Starts ``faceptor_hf.serving.create_app`` on uvicorn (127.0.0.1, a free port) twice in this process on the same
model, batched and with ``max_batch=1``, taking turns per client count, and sends ``POST /analyze`` uploads (JPEG
portraits, the shipped photos resized to one size) from 1, 8 and 32 client threads. Reports requests/s and the
p50/p99 latency of each, and the batched/unbatched throughput ratio; ``/health`` gives the photos per pipeline call.

    python benchmarks/benchmark_serve.py --small --requests 48         # CPU, a small random model (minutes)
    python benchmarks/benchmark_serve.py                                # CPU, Faceptor-Base size, random weights
    python benchmarks/benchmark_serve.py --device cuda --dtype bfloat16 --requests 512 --max-batch 32
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import PIL.Image
import torch
import uvicorn

from faceptor_hf import FaceAnalysisPipeline, FaceptorConfig, FaceptorImageProcessor, FaceptorModel
from faceptor_hf.serving import create_app, freeze_loaded_objects

IMAGES = Path(__file__).parent.parent / "examples" / "images"
CLIENTS = (1, 8, 32)


def small_config() -> FaceptorConfig:
    """Faceptor-Base's tasks on a 4-layer, 192-wide encoder: the serving overheads show, not only the model."""
    return FaceptorConfig(hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768,
                          recognition_layer=3, decoder_levels=[3], decoder_hidden_size=128, decoder_num_layers=2,
                          decoder_num_attention_heads=4, decoder_ffn_dim=256)


def portraits(size: int) -> list[bytes]:
    """JPEG bytes of the shipped portraits at ``size`` x ``size`` (one size: the server detects photos of one size
    in one batch)."""
    photos = []
    for name in ("astronaut.png", "grace_hopper.jpg"):
        buffer = io.BytesIO()
        PIL.Image.open(IMAGES / name).convert("RGB").resize((size, size)).save(buffer, format="JPEG", quality=90)
        photos.append(buffer.getvalue())
    return photos


class Server:
    """``create_app(pipe, **settings)`` on uvicorn in a thread, on a free 127.0.0.1 port."""

    def __init__(self, pipe, **settings):
        self.server = uvicorn.Server(uvicorn.Config(create_app(pipe, **settings), host="127.0.0.1", port=0,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"

    def close(self):
        self.server.should_exit = True
        self.thread.join()


def load(url: str, photos: list[bytes], clients: int, requests: int) -> dict:
    """``requests`` uploads to ``url``/analyze from ``clients`` threads: requests/s, p50/p99 latency in ms."""
    per_client = max(1, requests // clients)
    latencies = []

    def client(number: int):
        with httpx.Client(base_url=url, timeout=600) as http:
            for step in range(per_client):
                photo = photos[(number + step) % len(photos)]
                start = time.perf_counter()
                response = http.post("/analyze", files={"image": ("photo.jpg", photo, "image/jpeg")})
                latencies.append(time.perf_counter() - start)
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code}: {response.text[:200]}")

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    seconds = time.perf_counter() - start
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"requests": len(latencies), "requests_per_s": len(latencies) / seconds,
            "p50_ms": 1000 * statistics.median(latencies), "p99_ms": 1000 * quantiles[98]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--small", action="store_true", help="a small random model instead of Faceptor-Base size")
    parser.add_argument("--requests", type=int, default=96, help="requests per client count and server")
    parser.add_argument("--max-batch", type=int, default=32, help="the batched server's --max-batch")
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=512, help="side of the uploaded portraits (pixels)")
    parser.add_argument("--no-freeze", action="store_true",
                        help="leave the loaded objects to the garbage collector (serving.freeze_loaded_objects)")
    parser.add_argument("--json", default=None, help="append the result as one JSON line to this file")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = FaceptorModel(small_config() if args.small else FaceptorConfig.faceptor_base()).eval()
    pipe = FaceAnalysisPipeline(model=model, image_processor=FaceptorImageProcessor(), device=args.device,
                                dtype=getattr(torch, args.dtype))
    photos = portraits(args.size)
    pipe(photos[0])  # warm-up (detector weights, kernels)
    if not args.no_freeze:
        freeze_loaded_objects()  # as `faceptor-hf serve` does
    servers = {"batched": Server(pipe, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms),
               "unbatched": Server(pipe, max_batch=1, max_wait_ms=0)}
    rows = []
    try:
        for clients in CLIENTS:
            row = {"clients": clients}
            for mode, server in servers.items():  # taking turns: a busy neighbor slows both alike
                row[mode] = load(server.url, photos, clients, args.requests)
            row["throughput_ratio"] = row["batched"]["requests_per_s"] / row["unbatched"]["requests_per_s"]
            rows.append(row)
            print(json.dumps(row), flush=True)
        calls = httpx.get(f"{servers['batched'].url}/health").json()["batching"]["photos_per_call"]
    finally:
        for server in servers.values():
            server.close()
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    result = {"device": device, "dtype": args.dtype, "model": "small" if args.small else "faceptor-base",
              "gc_freeze": not args.no_freeze,
              "size": args.size, "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "rows": rows,
              "batched_photos_per_call": calls}
    print("\n| clients | batched req/s | p50 / p99 ms | unbatched req/s | p50 / p99 ms | batched / unbatched |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        batched, unbatched = row["batched"], row["unbatched"]
        print(f"| {row['clients']} | {batched['requests_per_s']:.2f} | {batched['p50_ms']:.0f} / "
              f"{batched['p99_ms']:.0f} | {unbatched['requests_per_s']:.2f} | {unbatched['p50_ms']:.0f} / "
              f"{unbatched['p99_ms']:.0f} | {row['throughput_ratio']:.2f}× |")
    print(f"\nbatched server, photos per pipeline call: {calls}")
    if args.json:
        with open(args.json, "a") as handle:
            handle.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
